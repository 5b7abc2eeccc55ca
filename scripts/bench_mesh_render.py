"""Time the pure-PyTorch mesh renderer: visibility buffer, shading, backward to the texture.

    python scripts/bench_mesh_render.py                      # all meshes, 256 and 512 px
    python scripts/bench_mesh_render.py --threads 1 --views 1
    python scripts/bench_mesh_render.py --device cuda --supersample 2

Meshes
- spot: the real Spot asset (../shared/assets/spot, 5,856 triangles, its own UVs and 1024^2
  texture).
- bunny: the Stanford bunny scan (69,451 triangles, no UVs), coloured by random vertex colours
  (gradients go to the vertex colours).
- sphere-100k: a latitude-longitude sphere with 100,352 triangles and its own UVs, 1024^2 random
  texture.

Per row, for a batch of --views cameras around the mesh (its bounding sphere just fits the view):
- visibility: ``rasterize_mesh`` (no gradients; what a cache saves on fixed views);
- shading: ``render_textured_mesh`` from that visibility buffer (UV interpolation, bilinear
  texture lookup, Lambertian light, compositing, the supersample average);
- backward: ``loss.backward()`` of a mean-squared error to the texture / vertex colours.
Times are medians of --repeats runs after a warm-up, wall clock (CUDA synchronised), and "cpu" is
the process CPU time of the whole step (on a loaded machine wall clock suffers more than CPU time).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ASSETS = REPO_ROOT.parent / "shared" / "assets"
SPHERE_RINGS, SPHERE_SEGMENTS = 224, 224  # 2 * 224 * 224 = 100,352 triangles


def lat_long_sphere(rings: int, segments: int):
    """Unit sphere with UVs (u = longitude, v = latitude): vertices (V, 3), faces (F, 3)."""
    lat = torch.linspace(-math.pi / 2, math.pi / 2, rings + 1)
    lon = torch.linspace(0.0, 2 * math.pi, segments + 1)  # the seam column is duplicated for the UVs
    lat_grid, lon_grid = torch.meshgrid(lat, lon, indexing="ij")
    vertices = torch.stack([lat_grid.cos() * lon_grid.cos(), lat_grid.cos() * lon_grid.sin(), lat_grid.sin()], -1)
    uvs = torch.stack([lon_grid / (2 * math.pi), (lat_grid + math.pi / 2) / math.pi], -1).reshape(-1, 2)
    index = torch.arange((rings + 1) * (segments + 1)).reshape(rings + 1, segments + 1)
    a, b = index[:-1, :-1].reshape(-1), index[:-1, 1:].reshape(-1)
    c, d = index[1:, 1:].reshape(-1), index[1:, :-1].reshape(-1)
    faces = torch.cat([torch.stack([a, b, c], -1), torch.stack([a, c, d], -1)])
    return vertices.reshape(-1, 3), faces, uvs


def load_meshes():
    from radiantforge.mesh import TriangleMesh, load_mesh

    spot = load_mesh(SHARED_ASSETS / "spot" / "spot_triangulated.obj")
    bunny = load_mesh(SHARED_ASSETS / "bunny" / "bun_zipper.ply")
    generator = torch.Generator().manual_seed(0)
    bunny.vertex_colors = torch.rand(len(bunny.vertices), 3, generator=generator)
    vertices, faces, uvs = lat_long_sphere(SPHERE_RINGS, SPHERE_SEGMENTS)
    texture = torch.rand(1024, 1024, 3, generator=generator)
    sphere = TriangleMesh(vertices, faces, uvs=uvs, face_uvs=faces, texture=texture)
    return {"spot": spot, "bunny": bunny, "sphere-100k": sphere}


def timed(fn, repeats: int, device: torch.device):
    """(median wall seconds, median process CPU seconds, last result) of ``fn()``."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()  # warm-up
    sync()
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        sync()
        walls.append(time.perf_counter() - start_wall)
        cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), statistics.median(cpus), result


def bench_case(mesh, resolution: int, views: int, supersample: int, repeats: int, device: torch.device):
    from radiantforge.cameras import orbit_cameras
    from radiantforge.mesh import DirectionalLight, rasterize_mesh, render_textured_mesh

    mesh = mesh.to(device)
    low, high = mesh.bounds()
    centre = ((low + high) / 2).cpu()
    radius = float((high - low).norm().cpu()) / 2
    fov = 40.0
    distance = radius / math.sin(math.radians(fov / 2)) * 1.05  # the bounding sphere just fits the view
    cameras = orbit_cameras(views, distance, target=tuple(centre.tolist()), fov_x_deg=fov, width=resolution,
                            height=resolution, elevation_deg=20.0).to(device)
    textured = mesh.has_uvs and mesh.texture is not None
    parameter = (mesh.texture if textured else mesh.vertex_colors).clone().requires_grad_()
    light = DirectionalLight(torch.tensor([0.3, -1.0, 0.8], device=device))

    vis_wall, vis_cpu, vbuf = timed(lambda: rasterize_mesh(mesh.vertices, mesh.faces, cameras,
                                                           supersample=supersample), repeats, device)

    def shade():
        vbuf._fragments = None  # count the gather of covered pixels too, as a fresh buffer would
        if textured:
            return render_textured_mesh(mesh, parameter, cameras, vbuf=vbuf, light=light)
        return render_textured_mesh(mesh, None, cameras, vertex_colors=parameter, vbuf=vbuf, light=light)

    shade_wall, shade_cpu, render = timed(shade, repeats, device)
    target = torch.rand_like(render.rgb)

    def backward():
        parameter.grad = None
        loss = (shade().rgb - target).square().mean()
        loss.backward()

    total_wall, total_cpu, _ = timed(backward, repeats, device)
    coverage = float(vbuf.mask.float().mean())
    return {
        "visibility": (vis_wall, vis_cpu),
        "shading": (shade_wall, shade_cpu),
        "backward": (max(total_wall - shade_wall, 0.0), max(total_cpu - shade_cpu, 0.0)),
        "coverage": coverage,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--views", type=int, default=4, help="cameras per batch")
    parser.add_argument("--supersample", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--meshes", nargs="+", default=["spot", "bunny", "sphere-100k"])
    args = parser.parse_args(argv)

    from radiantforge.devices import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    meshes = load_meshes()
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{args.views} views per batch, supersample {args.supersample}, median of {args.repeats}")
    header = (f"{'mesh':<12} {'triangles':>9} {'size':>5} {'cover':>6} | {'visibility':>17} | {'shading':>17} | "
              f"{'backward':>17} | {'total':>8}")
    print(header)
    print(f"{'':<12} {'':>9} {'':>5} {'':>6} | {'wall ms  (cpu ms)':>17} | {'wall ms  (cpu ms)':>17} | "
          f"{'wall ms  (cpu ms)':>17} | {'wall ms':>8}")
    print("-" * len(header))
    for name in args.meshes:
        mesh = meshes[name]
        for resolution in args.resolutions:
            row = bench_case(mesh, resolution, args.views, args.supersample, args.repeats, device)
            cells = [f"{row[k][0] * 1e3:8.1f} ({row[k][1] * 1e3:6.1f})" for k in ("visibility", "shading", "backward")]
            total = sum(row[k][0] for k in ("visibility", "shading", "backward")) * 1e3
            print(f"{name:<12} {mesh.num_faces:>9,} {resolution:>5} {row['coverage']:>6.1%} | "
                  f"{cells[0]:>17} | {cells[1]:>17} | {cells[2]:>17} | {total:8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
