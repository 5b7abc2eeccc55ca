"""The mesh visibility buffer and differentiable shading, checked against known answers.

- An independent ray caster (Moller-Trumbore in numpy, rays built from the GL camera-to-world
  matrices directly) on random cameras: triangle ids, depth and barycentrics per pixel.
- Near-plane clipping, whole-screen triangles and triangles reaching behind the camera.
- Supersampled coverage of a straight edge (exact fractions), the UV / texel convention.
- Finite-difference gradient checks through interpolation, texture sampling and shading, and a
  texture recovered by Adam from renders of Spot's real texture (PSNR on held-out views).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from radiantforge.cameras import Cameras, focal_from_fov, intrinsics_matrix, look_at_c2w_gl, orbit_cameras
from radiantforge.errors import InputError
from radiantforge.mesh import (
    DirectionalLight,
    TriangleMesh,
    VisibilityCache,
    interpolate,
    load_mesh,
    rasterize_mesh,
    render_textured_mesh,
    sample_texture,
)
from radiantforge.metrics import psnr

EDGE_MARGIN = 1e-3  # barycentric distance from an edge below which a pixel counts as "on an edge"
DEPTH_RTOL = 1e-4
MIN_ID_AGREEMENT = 0.99
FIT_STEPS = 75  # Adam steps of the texture-recovery test (about 37 dB held-out when measured)


@pytest.fixture(autouse=True)
def single_thread():
    """One torch thread: on a shared 2-core machine intra-op threads made these tests 10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- reference ray caster


TILE = 8  # rays per side of a reference ray-casting tile


def _cast_rays(origin, dirs, tris, edge1, edge2, near):
    """Closest hit (t > near) of rays origin + t dirs (R, 3) against triangles (F, 3, 3), float64.

    Returns per ray: triangle index (-1 = miss), t, barycentrics (3,), and whether the ray is
    clearly inside its hit triangle (and no other surface is within 1e-6 relative depth) or
    clearly away from every triangle.
    """
    R = len(dirs)
    if len(tris) == 0:
        return np.full(R, -1), np.zeros(R), np.zeros((R, 3)), np.ones(R, dtype=bool)
    tvec = origin - tris[:, 0]  # (F, 3)
    qvec = np.cross(tvec, edge1)  # (F, 3)
    d = dirs[:, None, :]  # (R, 1, 3)
    pvec = np.cross(d, edge2[None])  # (R, F, 3)
    det = (pvec * edge1[None]).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        u = (pvec * tvec[None]).sum(-1) * inv
        v = (d * qvec[None]).sum(-1) * inv
        t = (edge2[None] * qvec[None]).sum(-1) * inv
    bary = np.stack([1 - u - v, u, v], axis=-1)
    in_front = np.isfinite(t) & (t > near)
    min_bary = np.where(in_front, bary.min(-1), -np.inf)
    t_hit = np.where(min_bary >= 0, t, np.inf)
    best = t_hit.argmin(-1)
    rows = np.arange(R)
    found = np.isfinite(t_hit[rows, best])
    second = np.sort(t_hit, axis=-1)[:, 1] if t_hit.shape[1] > 1 else np.full(R, np.inf)
    with np.errstate(invalid="ignore"):
        separated = ~np.isfinite(second) | (second - t_hit[rows, best] > 1e-6 * t_hit[rows, best])
    clear_hit = found & (min_bary[rows, best] > EDGE_MARGIN) & separated
    clear_miss = ~found & (min_bary.max(-1) < -EDGE_MARGIN)
    return (np.where(found, best, -1), np.where(found, t_hit[rows, best], 0.0),
            np.where(found[:, None], bary[rows, best], 0.0), clear_hit | clear_miss)


def reference_ray_cast(vertices: np.ndarray, faces: np.ndarray, cameras: Cameras, near: float):
    """Closest hit per pixel by brute-force Moller-Trumbore in float64.

    Rays start at the camera centre and go through pixel centres, built from the GL
    camera-to-world matrix (camera looks down -Z, +Y up) without the backend's CV conversion.
    Returns tri (C, H, W) (-1 = miss), depth along the optical axis, bary (C, H, W, 3), and
    ``clear`` (C, H, W): the pixel is well inside its triangle or well away from every triangle.
    """
    tris = vertices[faces].astype(np.float64)  # (F, 3, 3)
    edge1 = tris[:, 1] - tris[:, 0]
    edge2 = tris[:, 2] - tris[:, 0]
    c2w = cameras.c2w_gl.double().numpy()
    K = cameras.intrinsics.double().numpy()
    W, H = cameras.width, cameras.height
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    out_tri = np.full((len(cameras), H, W), -1)
    out_depth = np.zeros((len(cameras), H, W))
    out_bary = np.zeros((len(cameras), H, W, 3))
    out_clear = np.zeros((len(cameras), H, W), dtype=bool)
    # Bounding spheres (padded) cull triangles per 8 x 8 tile of rays: a ray can only hit, or
    # nearly hit, a triangle if it passes through the triangle's bounding sphere.
    centres = tris.mean(1)
    radii = np.linalg.norm(tris - centres[:, None], axis=-1).max(1) * 1.01 + 1e-9
    for c in range(len(cameras)):
        x = (jj - K[c, 0, 2]) / K[c, 0, 0]
        y = (ii - K[c, 1, 2]) / K[c, 1, 1]
        # Image +y is down = camera -Y_gl; forward is -Z_gl; unit forward component so t = depth.
        dirs_cam_gl = np.stack([x, -y, -np.ones_like(x)], axis=-1)
        dirs_all = dirs_cam_gl @ c2w[c, :3, :3].T  # (H, W, 3)
        origin = c2w[c, :3, 3]
        to_centre = centres - origin
        for r0 in range(0, H, TILE):
            for c0 in range(0, W, TILE):
                d = dirs_all[r0 : r0 + TILE, c0 : c0 + TILE].reshape(-1, 3)
                unit = d / np.linalg.norm(d, axis=1, keepdims=True)
                along = unit @ to_centre.T  # (R, F)
                dist2 = (to_centre**2).sum(-1)[None] - along**2
                near_tris = np.nonzero((dist2 <= radii[None] ** 2).any(0))[0]
                tri, depth, bary, clear = _cast_rays(origin, d, tris[near_tris], edge1[near_tris],
                                                     edge2[near_tris], near)
                tri = np.where(tri >= 0, near_tris[np.maximum(tri, 0)], -1) if len(near_tris) else tri
                shape = dirs_all[r0 : r0 + TILE, c0 : c0 + TILE].shape[:2]
                out_tri[c, r0 : r0 + TILE, c0 : c0 + TILE] = tri.reshape(shape)
                out_depth[c, r0 : r0 + TILE, c0 : c0 + TILE] = depth.reshape(shape)
                out_bary[c, r0 : r0 + TILE, c0 : c0 + TILE] = bary.reshape(*shape, 3)
                out_clear[c, r0 : r0 + TILE, c0 : c0 + TILE] = clear.reshape(shape)
    return out_tri, out_depth, out_bary, out_clear


def assert_matches_reference(vertices, faces, cameras, near=1e-3, min_clear_fraction=0.5):
    vbuf = rasterize_mesh(torch.as_tensor(vertices, dtype=torch.float32), torch.as_tensor(faces), cameras, near=near)
    ref_tri, ref_depth, ref_bary, clear = reference_ray_cast(np.asarray(vertices), np.asarray(faces), cameras, near)
    tri = vbuf.tri_ids.numpy()
    assert clear.mean() > min_clear_fraction, "the test views are mostly edges; the comparison would be empty"
    agree = tri[clear] == ref_tri[clear]
    assert agree.mean() >= MIN_ID_AGREEMENT, f"triangle ids agree on {agree.mean():.4f} of clear pixels"
    both = (tri == ref_tri) & (ref_tri >= 0) & clear
    assert both.sum() > 0
    rel = np.abs(vbuf.depth.numpy()[both] - ref_depth[both]) / ref_depth[both]
    assert rel.max() <= DEPTH_RTOL, f"depth differs by {rel.max():.2e} (relative)"
    assert np.abs(vbuf.bary.numpy()[both] - ref_bary[both]).max() < 1e-3
    assert np.allclose(vbuf.bary.numpy()[both].sum(-1), 1.0, atol=1e-5)
    # Background: no depth, no barycentrics.
    assert (vbuf.depth.numpy()[tri < 0] == 0).all()
    return vbuf, ref_tri, clear


def random_cameras(rng: np.random.Generator, n: int, target, radius_range, width=80, height=60) -> Cameras:
    """Random positions, look-at targets jittered around ``target``, random roll, unequal fx / fy,
    an off-centre principal point and a non-square image (catches x / y and W / H mix-ups)."""
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    eyes = np.asarray(target) + dirs * rng.uniform(*radius_range, size=(n, 1))
    c2w = []
    for eye in eyes:
        look = np.asarray(target) + rng.normal(scale=0.1, size=3)
        m = look_at_c2w_gl(torch.tensor(eye[None], dtype=torch.float32), torch.tensor(look, dtype=torch.float32))[0]
        roll = rng.uniform(-math.pi, math.pi)
        r = torch.tensor([[math.cos(roll), -math.sin(roll), 0], [math.sin(roll), math.cos(roll), 0], [0, 0, 1.0]])
        m[:3, :3] = m[:3, :3] @ r  # roll about the viewing axis
        c2w.append(m)
    fx = focal_from_fov(math.radians(50), width)
    K = intrinsics_matrix(fx, fx * 1.1, width * 0.47, height * 0.55)
    return Cameras(torch.stack(c2w), K.expand(n, 3, 3), width, height)


@pytest.fixture(scope="module")
def spot(shared_assets) -> TriangleMesh:
    return load_mesh(shared_assets / "spot" / "spot_triangulated.obj")


def box_mesh(half: float = 1.0):
    """A closed cube (12 triangles) centred at the origin."""
    signs = (-half, half)
    corners = np.array([[x, y, z] for x in signs for y in signs for z in signs], dtype=np.float64)
    faces = np.array([
        [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
        [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],
    ])
    return corners, faces


# ----------------------------------------------------------------------------- visibility buffer


def test_matches_ray_casting_on_random_cameras(spot):
    rng = np.random.default_rng(0)
    cameras = random_cameras(rng, 3, target=spot.vertices.mean(0).numpy(), radius_range=(1.8, 3.5))
    vbuf, ref_tri, _ = assert_matches_reference(spot.vertices.numpy(), spot.faces.numpy(), cameras)
    assert 0.05 < vbuf.mask.float().mean() < 0.95  # Spot is in view but does not fill it


def test_near_plane_slices_through_the_mesh(spot):
    # A near plane through the middle of Spot: pixels there see the inside (back faces) instead.
    rng = np.random.default_rng(1)
    centre = spot.vertices.mean(0).numpy()
    cameras = random_cameras(rng, 2, target=centre, radius_range=(2.0, 2.0))
    vbuf, ref_tri, _ = assert_matches_reference(spot.vertices.numpy(), spot.faces.numpy(), cameras, near=2.0)
    assert (vbuf.depth[vbuf.mask] > 2.0).all()
    unclipped = rasterize_mesh(spot.vertices, spot.faces, cameras)
    assert (unclipped.tri_ids != vbuf.tri_ids).float().mean() > 0.02  # the clip really changed the picture


def test_camera_inside_a_box_sees_walls_everywhere():
    # The walls beside and behind the camera cross its near plane: they must be clipped, not lost.
    rng = np.random.default_rng(2)
    corners, faces = box_mesh()
    c2w = []
    for _ in range(3):
        eye = rng.uniform(-0.6, 0.6, size=3)
        look = eye + rng.normal(size=3)
        eye_t, look_t = (torch.tensor(p, dtype=torch.float32) for p in (eye[None], look))
        c2w.append(look_at_c2w_gl(eye_t, look_t)[0])
    K = intrinsics_matrix(30.0, 30.0, 32.0, 24.0)  # about 93 degrees across: corners and edges in view
    cameras = Cameras(torch.stack(c2w), K, 64, 48)
    vbuf, _, _ = assert_matches_reference(corners, faces, cameras, min_clear_fraction=0.8)
    assert vbuf.mask.all()


def test_whole_screen_triangle_and_one_reaching_behind_the_camera():
    # A camera at (0, -3, 0) looking along +Y (Z up).
    c2w = look_at_c2w_gl(torch.tensor([[0.0, -3.0, 0.0]]), torch.tensor([0.0, 0.0, 0.0]))
    cameras = Cameras(c2w, intrinsics_matrix(40.0, 40.0, 32.0, 32.0), 64, 64)
    big = 1e3
    # A huge triangle in the plane y = 0 (3 units in front) covering everything.
    vertices = torch.tensor([[-big, 0.0, -big], [big, 0.0, -big], [0.0, 0.0, big]])
    vbuf = rasterize_mesh(vertices, torch.tensor([[0, 1, 2]]), cameras)
    assert vbuf.mask.all()
    assert torch.allclose(vbuf.depth, torch.full_like(vbuf.depth, 3.0), rtol=1e-6)
    # A triangle from in front of the camera to far behind it: only the part beyond near shows.
    vertices = torch.tensor([[-0.5, 2.0, -0.5], [0.5, 2.0, -0.5], [0.0, -50.0, 3.0]])
    assert_matches_reference(vertices.numpy(), np.array([[0, 1, 2]]), cameras, min_clear_fraction=0.9)
    vbuf = rasterize_mesh(vertices, torch.tensor([[0, 1, 2]]), cameras)
    assert vbuf.mask.any() and torch.isfinite(vbuf.depth).all() and torch.isfinite(vbuf.bary).all()


def test_backface_culling_keeps_only_counter_clockwise_faces():
    c2w = look_at_c2w_gl(torch.tensor([[0.0, -3.0, 0.0]]), torch.tensor([0.0, 0.0, 0.0]))
    cameras = Cameras(c2w, intrinsics_matrix(40.0, 40.0, 16.0, 16.0), 32, 32)
    # Seen from -Y with Z up, x to the right: (-1,0,-1) -> (1,0,-1) -> (0,0,1) is counter-clockwise.
    vertices = torch.tensor([[-1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    front = torch.tensor([[0, 1, 2]])
    assert rasterize_mesh(vertices, front, cameras, cull_backfaces=True).mask.any()
    assert not rasterize_mesh(vertices, front.flip(1), cameras, cull_backfaces=True).mask.any()
    assert rasterize_mesh(vertices, front.flip(1), cameras).mask.any()  # two-sided by default


def test_supersampled_coverage_of_a_straight_edge_is_exact():
    # A screen-filling square whose right edge is the image column x = 10.3 px.
    width, height, fx, factor = 24, 8, 20.0, 4
    cameras = Cameras(torch.eye(4)[None], intrinsics_matrix(fx, fx, 12.0, 4.0), width, height)  # GL: looks down -Z
    depth = 2.0
    edge_x = (10.3 - 12.0) / fx * depth  # camera x of the column x = 10.3
    quad = torch.tensor([[-50.0, -50.0, -depth], [edge_x, -50.0, -depth], [edge_x, 50.0, -depth],
                         [-50.0, 50.0, -depth]])
    mesh = TriangleMesh(quad, torch.tensor([[0, 1, 2], [0, 2, 3]]), vertex_colors=torch.ones(4, 3))
    render = render_textured_mesh(mesh, None, cameras, supersample=factor, background=0.0)
    expected = torch.zeros(width)
    expected[:10] = 1.0
    expected[10] = 1 / factor  # sub-samples at 10.125 | 10.375, 10.625, 10.875
    assert torch.allclose(render.alpha[0, :, :, 0], expected.expand(height, width))
    assert torch.allclose(render.rgb[0, ..., 0], expected.expand(height, width))
    assert render.vbuf.tri_ids.shape == (1, height * factor, width * factor)


def test_visibility_cache_rasterises_each_camera_once(spot):
    cameras = orbit_cameras(3, 2.5, width=40, height=30)
    cache = VisibilityCache(spot.vertices, spot.faces)
    first = cache(cameras)
    again = cache(cameras[torch.tensor([2, 0])])
    assert cache.misses == 3
    assert torch.equal(again.tri_ids, first.tri_ids[[2, 0]])
    direct = rasterize_mesh(spot.vertices, spot.faces, cameras)
    assert torch.equal(direct.tri_ids, first.tri_ids) and torch.equal(direct.depth, first.depth)


def test_bad_input_names_the_field():
    cameras = orbit_cameras(1, 2.0, width=8, height=8)
    vertices = torch.zeros(3, 3)
    with pytest.raises(InputError, match="faces"):
        rasterize_mesh(vertices, torch.tensor([[0, 1, 3]]), cameras)
    with pytest.raises(InputError, match="faces"):
        rasterize_mesh(vertices, torch.zeros(0, 3, dtype=torch.long), cameras)
    with pytest.raises(InputError, match="vertices"):
        rasterize_mesh(torch.full((3, 3), float("nan")), torch.tensor([[0, 1, 2]]), cameras)
    with pytest.raises(InputError, match="vertices"):
        rasterize_mesh(torch.zeros(3, 2), torch.tensor([[0, 1, 2]]), cameras)
    with pytest.raises(InputError, match="supersample"):
        rasterize_mesh(vertices, torch.tensor([[0, 1, 2]]), cameras, supersample=0)
    with pytest.raises(InputError, match="texture"):
        sample_texture(torch.zeros(4, 4), torch.zeros(2, 2))


# ----------------------------------------------------------------------------- textures and gradients


def test_texel_centres_and_uv_orientation():
    texture = torch.rand(5, 7, 3, dtype=torch.float64)
    i, j = torch.meshgrid(torch.arange(5, dtype=torch.float64), torch.arange(7, dtype=torch.float64), indexing="ij")
    uv = torch.stack([(j + 0.5) / 7, 1 - (i + 0.5) / 5], dim=-1)  # v up: row 0 is the top
    for wrap in ("repeat", "clamp"):
        assert torch.allclose(sample_texture(texture, uv, wrap=wrap), texture, atol=1e-12)
    assert torch.allclose(sample_texture(texture, uv + torch.tensor([2.0, -1.0]).double()), texture, atol=1e-9)
    # Halfway between the last and the first column, "repeat" blends across the seam.
    seam = sample_texture(texture, torch.tensor([[0.0, 1 - 0.5 / 5]]).double())
    assert torch.allclose(seam[0], 0.5 * (texture[0, 0] + texture[0, -1]))


def _wrapped_lookup_by_circular_padding(texture, uv):
    """Reference for wrap="repeat": one texel of circular padding around the whole texture, then
    grid_sample's bilinear filter (what sample_texture did before it padded nothing)."""
    tex_h, tex_w, channels = texture.shape
    image = torch.nn.functional.pad(texture.permute(2, 0, 1)[None], (1, 1, 1, 1), mode="circular")
    u, v = uv.reshape(-1, 2).unbind(-1)
    x_px = (u - torch.floor(u)) * tex_w + 1.0
    y_px = (1.0 - (v - torch.floor(v))) * tex_h + 1.0
    grid = torch.stack([2.0 * x_px / (tex_w + 2) - 1.0, 2.0 * y_px / (tex_h + 2) - 1.0], dim=-1).reshape(1, 1, -1, 2)
    sampled = torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.reshape(channels, -1).T


def test_repeat_lookup_matches_circular_padding_in_values_and_gradients():
    """Seam samples are redone with wrapped indices, the rest read the texture in place: in float64
    the values and both gradients (texels, UVs) equal the circular-padding reference everywhere,
    on a non-square texture, with UVs outside the square and exactly on its edges."""
    generator = torch.Generator().manual_seed(3)
    texture = torch.rand(9, 13, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    uv = torch.rand(4000, 2, dtype=torch.float64, generator=generator) * 1.6 - 0.3
    edges = torch.tensor([[0.0, 0.3], [1.0, 0.7], [0.2, 0.0], [0.6, 1.0], [0.01, 0.99], [0.99, 0.01]],
                         dtype=torch.float64)
    uv = torch.cat([uv, edges]).requires_grad_()
    ours = sample_texture(texture, uv)
    reference = _wrapped_lookup_by_circular_padding(texture, uv)
    assert torch.allclose(ours, reference, atol=1e-12)
    seams = ((uv.detach() * torch.tensor([13.0, 9.0], dtype=torch.float64)) % torch.tensor([13.0, 9.0],
             dtype=torch.float64))
    near_edge = ((seams < 0.5) | (seams > torch.tensor([12.5, 8.5], dtype=torch.float64))).any(-1)
    assert int(near_edge.sum()) > 100  # the seam path is exercised
    weights = torch.rand(ours.shape, dtype=torch.float64, generator=generator)
    ours_grads = torch.autograd.grad((ours * weights).sum(), [texture, uv])
    reference_grads = torch.autograd.grad((reference * weights).sum(), [texture, uv])
    for mine, theirs in zip(ours_grads, reference_grads):
        assert torch.allclose(mine, theirs, atol=1e-9)


def test_quad_shows_the_texture_upright():
    # A quad filling the view, UV (0, 0) at its bottom-left: the image must equal the texture.
    size = 16
    cameras = Cameras(torch.eye(4)[None], intrinsics_matrix(size / 2, size / 2, size / 2, size / 2), size, size)
    quad = torch.tensor([[-1.0, -1.0, -1.0], [1.0, -1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, 1.0, -1.0]])  # GL: y up
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    mesh = TriangleMesh(quad, faces, uvs=uvs, face_uvs=faces)
    texture = torch.rand(size, size, 3)
    render = render_textured_mesh(mesh, texture, cameras)
    assert torch.allclose(render.rgb[0], texture, atol=1e-5)


def _tiny_scene():
    """Two triangles seen by two 9 x 7 cameras, with UVs and vertex colours."""
    vertices = torch.tensor([[-1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [0.8, 0.3, 1.0], [-0.9, -0.2, 0.9]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    eyes = torch.tensor([[0.3, -3.0, 0.2], [-0.5, -2.5, 0.8]])
    c2w = look_at_c2w_gl(eyes, torch.zeros(3))
    cameras = Cameras(c2w, intrinsics_matrix(12.0, 12.0, 4.5, 3.5), 9, 7)
    uvs = torch.tensor([[0.1, 0.2], [0.9, 0.15], [0.85, 0.8], [0.05, 0.9]], dtype=torch.float64)
    return vertices, faces, cameras, uvs


def test_gradcheck_texture_and_uvs_through_interpolate_and_sample():
    vertices, faces, cameras, uvs = _tiny_scene()
    vbuf = rasterize_mesh(vertices, faces, cameras)
    assert vbuf.mask.float().mean() > 0.3
    texture = torch.rand(4, 5, 3, dtype=torch.float64, requires_grad=True)
    uvs = uvs.clone().requires_grad_()

    def shade(tex, uv_attr):
        return sample_texture(tex, interpolate(uv_attr, vbuf, faces)) * vbuf.mask[..., None]

    assert torch.autograd.gradcheck(shade, (texture, uvs), eps=1e-6, atol=1e-6)


def test_gradcheck_full_render_with_light_and_supersampling():
    vertices, faces, cameras, uvs = _tiny_scene()
    mesh = TriangleMesh(vertices, faces, uvs=uvs.float(), face_uvs=faces, vertex_colors=torch.rand(4, 3))
    light = DirectionalLight(torch.tensor([[0.2, -1.0, 0.5], [-0.4, -1.0, 0.1]]), ambient=0.2, diffuse=0.8)
    texture = torch.rand(4, 5, 3, dtype=torch.float64, requires_grad=True)
    colors = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)

    def by_texture(tex):
        return render_textured_mesh(mesh, tex, cameras, light=light, supersample=2, background=0.5).rgb

    def by_vertex_colors(col):
        return render_textured_mesh(mesh, None, cameras, vertex_colors=col, light=light, background=0.5).rgb

    assert torch.autograd.gradcheck(by_texture, (texture,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(by_vertex_colors, (colors,), eps=1e-6, atol=1e-6)


def test_lambertian_shading_of_a_plane_known_answer():
    cameras = Cameras(torch.eye(4)[None], intrinsics_matrix(8.0, 8.0, 8.0, 8.0), 16, 16)
    quad = torch.tensor([[-5.0, -5.0, -2.0], [5.0, -5.0, -2.0], [5.0, 5.0, -2.0], [-5.0, 5.0, -2.0]])
    # Wound clockwise as seen by the camera: its normal points away, and shading must flip it.
    mesh = TriangleMesh(quad, torch.tensor([[0, 2, 1], [0, 3, 2]]), vertex_colors=torch.full((4, 3), 0.8))
    tilt = math.radians(60)
    light = DirectionalLight(torch.tensor([math.sin(tilt), 0.0, math.cos(tilt)]), ambient=0.25, diffuse=0.75)
    render = render_textured_mesh(mesh, None, cameras, light=light, smooth_normals=False)
    expected = 0.8 * (0.25 + 0.75 * math.cos(tilt))
    assert torch.allclose(render.rgb, torch.full_like(render.rgb, expected), atol=1e-5)


def test_adam_recovers_spots_texture_from_renders(spot):
    """Known answer for the whole differentiable path: fit a grey texture to renders of the true one."""
    torch.manual_seed(0)
    size = 128  # texture resolution fitted (the truth is Spot's texture reduced to this size)
    truth = torch.nn.functional.interpolate(spot.texture.permute(2, 0, 1)[None], size=(size, size),
                                            mode="area")[0].permute(1, 2, 0).contiguous()
    centre = tuple(((spot.vertices.amin(0) + spot.vertices.amax(0)) / 2).tolist())
    train = orbit_cameras(16, 2.6, target=centre, width=80, height=80, elevation_deg=None, upper_hemisphere=False)
    held_out = orbit_cameras(4, 2.6, target=centre, width=80, height=80, elevation_deg=25.0)
    held_out.c2w_gl = look_at_c2w_gl(held_out.centers @ torch.tensor(  # rotate the ring off the training views
        [[math.cos(0.4), -math.sin(0.4), 0.0], [math.sin(0.4), math.cos(0.4), 0.0], [0.0, 0.0, 1.0]]).T,
        torch.tensor(centre))
    cache = VisibilityCache(spot.vertices, spot.faces)
    train_vbuf, held_vbuf = cache(train), cache(held_out)
    targets = render_textured_mesh(spot, truth, train, vbuf=train_vbuf).rgb
    texture = torch.full((size, size, 3), 0.5, requires_grad=True)
    optimizer = torch.optim.Adam([texture], lr=0.05)
    for _ in range(FIT_STEPS):
        optimizer.zero_grad()
        loss = (render_textured_mesh(spot, texture, train, vbuf=train_vbuf).rgb - targets).square().mean()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        fitted = render_textured_mesh(spot, texture.clamp(0, 1), held_out, vbuf=held_vbuf)
        reference = render_textured_mesh(spot, truth, held_out, vbuf=held_vbuf)
        start = render_textured_mesh(spot, torch.full((size, size, 3), 0.5), held_out, vbuf=held_vbuf)
    mask = reference.alpha[..., 0] > 0
    fitted_psnr = psnr(fitted.rgb[mask][None, :, None], reference.rgb[mask][None, :, None]).item()
    start_psnr = psnr(start.rgb[mask][None, :, None], reference.rgb[mask][None, :, None]).item()
    assert fitted_psnr >= 30.0, f"held-out PSNR {fitted_psnr:.1f} dB (grey start: {start_psnr:.1f} dB)"
    assert start_psnr < 15.0


# ----------------------------------------------------------------------------- loading


def test_loader_reads_the_bunny_and_rejects_bad_files(shared_assets, tmp_path):
    bunny = load_mesh(shared_assets / "bunny" / "bun_zipper.ply")
    assert bunny.vertices.shape == (35947, 3) and bunny.faces.shape == (69451, 3)
    assert not bunny.has_uvs and bunny.texture is None
    used = torch.zeros(len(bunny.vertices), dtype=torch.bool)
    used[bunny.faces.reshape(-1)] = True  # the scan has 1,113 vertices no face uses: their normal is 0
    assert torch.allclose(bunny.vertex_normals[used].norm(dim=-1), torch.ones(int(used.sum())), atol=1e-4)
    with pytest.raises(InputError, match="no such file"):
        load_mesh(tmp_path / "missing.obj")
    (tmp_path / "notes.txt").write_text("not a mesh")
    with pytest.raises(InputError, match="unsupported mesh format"):
        load_mesh(tmp_path / "notes.txt")
    points_only = tmp_path / "points.ply"
    points_only.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                           "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
    with pytest.raises(InputError, match="points.ply.*no faces"):
        load_mesh(points_only)
    (tmp_path / "broken.obj").write_text("v 0 0 0\nf 1 2 3\n")  # face refers to vertices that do not exist
    with pytest.raises(InputError, match="broken.obj"):
        load_mesh(tmp_path / "broken.obj")


def test_obj_is_turned_to_blender_z_up_and_uvs_kept_per_corner(shared_assets):
    path = shared_assets / "spot" / "spot_triangulated.obj"
    as_file = load_mesh(path, up_axis="Z")  # no rotation
    as_blender = load_mesh(path)
    assert torch.allclose(as_blender.vertices, as_file.vertices[:, [0, 2, 1]] * torch.tensor([1.0, -1.0, 1.0]))
    # Every corner's UV equals the file's own "vt" for that corner (seams are split, not merged).
    lines = path.read_text().splitlines()
    vt = np.array([[float(x) for x in line.split()[1:3]] for line in lines if line.startswith("vt ")])
    face_lines = [line for line in lines if line.startswith("f ")]
    corner_vt = np.array([[int(p.split("/")[1]) - 1 for p in line.split()[1:]] for line in face_lines])
    ours = as_blender.uvs[as_blender.face_uvs].numpy()
    assert np.abs(ours - vt[corner_vt]).max() < 1e-6


def test_xatlas_uvs_keep_the_geometry(tmp_path):
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3)
    sphere.export(tmp_path / "sphere.obj")
    plain = load_mesh(tmp_path / "sphere.obj")
    assert not plain.has_uvs
    atlas = load_mesh(tmp_path / "sphere.obj", generate_uvs=True)
    assert atlas.has_uvs and atlas.num_faces == plain.num_faces
    assert atlas.uvs.min() >= 0 and atlas.uvs.max() <= 1
    cameras = orbit_cameras(2, 3.0, width=48, height=48)
    before = rasterize_mesh(plain.vertices, plain.faces, cameras)
    after = rasterize_mesh(atlas.vertices, atlas.faces, cameras)
    assert torch.equal(before.mask, after.mask)
    assert torch.allclose(before.depth, after.depth, atol=1e-6)
    texture = torch.rand(64, 64, 3)
    assert render_textured_mesh(atlas, texture, cameras).rgb.isfinite().all()
