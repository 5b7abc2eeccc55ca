"""Known-answer tests of mesh extraction from a density field (radiantforge.nerf.mesh_extract).

The field is an analytic sphere (σ = peak·sigmoid((r − |x|)/w), whose iso-surface at peak/2 is
exactly the sphere of radius r) plus a small floating blob, with a half-red half-blue albedo.
Files written are read back with trimesh and with the project's own loader.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from radiantforge.cameras import fibonacci_directions
from radiantforge.errors import InputError
from radiantforge.mesh.io import load_mesh
from radiantforge.mesh.shading import sample_texture
from radiantforge.nerf import (MeshExtractionConfig, decimate, export_textured_mesh, extract_mesh,
                               extract_textured_mesh, keep_large_components, marching_cubes_mesh, density_grid,
                               rasterize_uv_layout)

RADIUS = 0.6
PEAK = 100.0
SHELL = 0.02
BLOB_CENTER = (0.85, 0.0, 0.0)
BLOB_RADIUS = 0.08
RED, BLUE = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
GRID = 64
# Stated accuracy: vertices within this distance of the true sphere (grid spacing 2/63 ≈ 0.032 m).
SURFACE_TOLERANCE = 0.006


class SphereWithFloater:
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])

    def density(self, points):
        body = PEAK * torch.sigmoid((RADIUS - points.norm(dim=-1)) / SHELL)
        floater = PEAK * torch.sigmoid((BLOB_RADIUS - (points - torch.tensor(BLOB_CENTER)).norm(dim=-1)) / SHELL)
        return body + floater

    def albedo(self, points):
        right = (points[:, 0] > 0).float()[:, None]
        return right * RED + (1.0 - right) * BLUE


def config(**changes) -> MeshExtractionConfig:
    settings = dict(grid_resolution=GRID, density_threshold=PEAK / 2, target_faces=1500, texture_size=256)
    settings.update(changes)
    return MeshExtractionConfig(**settings)


@pytest.fixture(scope="module")
def textured_mesh():
    return extract_textured_mesh(SphereWithFloater(), config())


def test_marching_cubes_finds_the_sphere_and_the_floater_then_cleanup_drops_the_floater():
    field = SphereWithFloater()
    grid = density_grid(field.density, field.aabb, GRID)
    vertices, faces = marching_cubes_mesh(grid, field.aabb, PEAK / 2)
    near_floater = np.linalg.norm(vertices - np.array(BLOB_CENTER), axis=1) < 2 * BLOB_RADIUS
    assert near_floater.sum() > 10  # the raw surface has the floater
    kept_vertices, kept_faces = keep_large_components(vertices, faces, min_ratio=0.1)
    assert not (np.linalg.norm(kept_vertices - np.array(BLOB_CENTER), axis=1) < 2 * BLOB_RADIUS).any()
    assert len(kept_faces) < len(faces)
    distance = np.abs(np.linalg.norm(kept_vertices, axis=1) - RADIUS)
    assert distance.max() < SURFACE_TOLERANCE
    # Closed and facing outwards: the enclosed volume is the ball's.
    a, b, c = (kept_vertices[kept_faces[:, k]] for k in range(3))
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    assert volume == pytest.approx(4.0 / 3.0 * math.pi * RADIUS**3, rel=0.01)


def test_extracted_mesh_is_near_the_sphere_everywhere_and_decimated_to_target():
    mesh = extract_mesh(SphereWithFloater().density, SphereWithFloater.aabb, config(target_faces=1500))
    assert 0.9 * 1500 <= mesh.num_faces <= 1500
    vertices = mesh.vertices.double()
    # Mesh -> sphere: every vertex near the true surface (decimation keeps vertices on it).
    assert float((vertices.norm(dim=-1) - RADIUS).abs().max()) < 2 * SURFACE_TOLERANCE
    # Sphere -> mesh: every direction has a mesh vertex within about one edge length.
    mean_edge = math.sqrt(4.0 * math.pi * RADIUS**2 / mesh.num_faces * 4.0 / math.sqrt(3.0))
    directions = fibonacci_directions(2000).double()
    on_sphere = RADIUS * directions
    nearest = torch.cdist(on_sphere, vertices).min(dim=1).values
    assert float(nearest.max()) < mean_edge
    chamfer = 0.5 * (float(nearest.mean()) + float((vertices.norm(dim=-1) - RADIUS).abs().mean()))
    assert chamfer < 0.25 * mean_edge
    assert not bool(((vertices - torch.tensor(BLOB_CENTER, dtype=torch.float64)).norm(dim=-1) < 0.2).any())


def test_decimation_reaches_the_target_face_count():
    field = SphereWithFloater()
    vertices, faces = marching_cubes_mesh(density_grid(field.density, field.aabb, 48), field.aabb, PEAK / 2)
    assert len(faces) > 5000
    for target in (4000, 800):
        new_vertices, new_faces = decimate(vertices, faces, target)
        assert 0.9 * target <= len(new_faces) <= target
        assert new_faces.max() < len(new_vertices) and len(np.unique(new_faces)) == len(new_vertices)
    same_vertices, same_faces = decimate(vertices, faces, 10 * len(faces))
    assert len(same_faces) == len(faces)


def test_uvs_cover_the_unit_square(textured_mesh):
    uvs = textured_mesh.uvs
    assert float(uvs.min()) >= 0.0 and float(uvs.max()) <= 1.0
    extent = uvs.amax(0) - uvs.amin(0)
    assert float(extent.min()) > 0.9  # the atlas fills the texture
    assert textured_mesh.texture.shape == (256, 256, 3)


def test_baked_texture_reproduces_the_albedo_at_every_vertex(textured_mesh):
    mesh = textured_mesh
    sampled = sample_texture(mesh.texture, mesh.uvs, wrap="clamp")
    expected = SphereWithFloater().albedo(mesh.vertices)
    # Vertices closer to the red/blue border than an edge length sit on triangles of both colours.
    mean_edge = math.sqrt(4.0 * math.pi * RADIUS**2 / mesh.num_faces * 4.0 / math.sqrt(3.0))
    away_from_border = mesh.vertices[:, 0].abs() > mean_edge
    assert away_from_border.float().mean() > 0.8
    error = (sampled - expected)[away_from_border].abs().max()
    assert float(error) < 0.02
    # Every sample of the texture is red or blue, nothing in between away from the border.
    assert float((sampled[away_from_border] - 0.5).abs().min()) > 0.45


def test_uv_rasteriser_covers_a_square_once_and_gives_slivers_texels():
    size = 16
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    face_ids, bary = rasterize_uv_layout(uvs, faces, size, border_px=0.0)
    assert (face_ids >= 0).all()
    # Barycentric interpolation of the corners' UVs gives back each texel centre.
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre_uv = torch.stack([(cols + 0.5) / size, 1.0 - (rows + 0.5) / size], dim=-1)
    recovered = (bary[..., None] * uvs[faces[face_ids]]).sum(-2)
    assert torch.allclose(recovered, centre_uv, atol=1e-5)
    # Below the diagonal u > v: face 0; above: face 1.
    below = centre_uv[..., 0] > centre_uv[..., 1] + 1e-6
    assert (face_ids[below] == 0).all() and (face_ids[centre_uv[..., 0] < centre_uv[..., 1] - 1e-6] == 1).all()
    # A sliver a tenth of a texel wide between texel centres still gets texels with border_px = 1.
    sliver = torch.tensor([[0.30, 0.1], [0.305, 0.9], [0.31, 0.1]])
    assert not (rasterize_uv_layout(sliver, torch.tensor([[0, 1, 2]]), size, border_px=0.0)[0] >= 0).any()
    ids, weights = rasterize_uv_layout(sliver, torch.tensor([[0, 1, 2]]), size, border_px=1.0)
    assert (ids >= 0).sum() >= 6
    assert torch.allclose(weights[ids >= 0].sum(-1), torch.ones(int((ids >= 0).sum())))


def test_export_round_trips_through_trimesh_and_the_loader(textured_mesh, tmp_path):
    paths = export_textured_mesh(textured_mesh, tmp_path / "out", "sphere")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"sphere.obj", "sphere.mtl", "sphere.png", "sphere.glb"}
    for role in ("glb", "obj"):
        loaded = trimesh.load(paths[role], process=False, force="mesh")
        assert len(loaded.vertices) == len(textured_mesh.vertices), role
        assert len(loaded.faces) == textured_mesh.num_faces, role
        # Y-up files: the file's +Y is the world's +Z.
        assert np.allclose(np.asarray(loaded.vertices)[:, 1], textured_mesh.vertices[:, 2].numpy(), atol=1e-5)
        # The project's loader turns Y up back into Blender's Z up: the same world-space mesh.
        mesh = load_mesh(paths[role])
        assert torch.allclose(mesh.vertices, textured_mesh.vertices, atol=1e-5), role
        assert torch.allclose(mesh.uvs, textured_mesh.uvs, atol=1e-5), role
        assert mesh.texture is not None and mesh.texture.shape == textured_mesh.texture.shape
        assert float((mesh.texture - textured_mesh.texture).abs().max()) <= 1.0 / 255.0 + 1e-6, role


def test_export_keeps_existing_files_and_rejects_bad_names(textured_mesh, tmp_path):
    (tmp_path / "mesh.glb").write_bytes(b"the user's file")
    with pytest.raises(InputError, match="mesh.glb"):
        export_textured_mesh(textured_mesh, tmp_path, "mesh")
    assert (tmp_path / "mesh.glb").read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.glb"]  # nothing half-written
    with pytest.raises(InputError, match="name"):
        export_textured_mesh(textured_mesh, tmp_path, "../escape")
    export_textured_mesh(textured_mesh, tmp_path, "mesh", overwrite=True)
    assert trimesh.load(tmp_path / "mesh.glb", process=False, force="mesh").vertices.shape[0] == len(
        textured_mesh.vertices)


def test_a_field_without_a_surface_is_a_clear_error():
    field = SphereWithFloater()
    with pytest.raises(InputError, match="density_threshold.*never crosses"):
        extract_mesh(field.density, field.aabb, config(density_threshold=10 * PEAK))
    with pytest.raises(InputError, match="target_faces"):
        MeshExtractionConfig(target_faces=2)
