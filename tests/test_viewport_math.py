"""The viewport's numpy maths (addon/viewport_math.py) against the backend's torch functions, on real splat files.

The add-on cannot import the backend, so it repeats the projection, the SH colour and the depth
order; these must agree with ``radiantforge.gaussians`` (gsplat's rules) to 1e-5 relative.
"""

from __future__ import annotations

import math

import numpy as np
import plyfile
import pytest
import torch

from blender_helpers import splat_asset
from radiantforge.gaussians.ply import load_gaussian_ply
from radiantforge.gaussians.projection import covariance_3d, project_gaussians
from radiantforge.gaussians.render import splat_framing, turntable_cameras
from radiantforge.gaussians.sh import sh_to_color
from radiantforge_addon import viewport_math

ASSETS = ["train-1000.ply", "donut-sh0.ply"]


def _columns(path):
    vertex = plyfile.PlyData.read(str(path))["vertex"]
    return {name: np.asarray(vertex[name], dtype=np.float32) for name in vertex.data.dtype.names}


def _camera(splats, width=96, height=80, elevation=30.0):
    centre, radius = splat_framing(splats)
    return turntable_cameras(centre, radius * 0.8, 1, width, height, elevation_deg=elevation)


@pytest.mark.parametrize("asset", ASSETS)
def test_parameters_and_covariances_match_the_backend(asset):
    path = splat_asset(asset)
    params = viewport_math.splat_parameters(_columns(path))
    activated = load_gaussian_ply(path).activated()
    for ours, theirs in (("means", "means"), ("quats", "quats"), ("scales", "scales"), ("opacities", "opacities"),
                         ("sh", "sh_coeffs")):
        np.testing.assert_allclose(params[ours], activated[theirs].numpy(), rtol=1e-5, atol=1e-7, err_msg=ours)
    covs = viewport_math.covariances(params["quats"].astype(np.float64), params["scales"].astype(np.float64))
    reference = covariance_3d(activated["quats"].double(), activated["scales"].double()).numpy()
    np.testing.assert_allclose(covs, reference, rtol=1e-5, atol=1e-12 + 1e-5 * np.abs(reference).max())


@pytest.mark.parametrize("asset", ASSETS)
def test_projection_matches_the_backend(asset):
    path = splat_asset(asset)
    splats = load_gaussian_ply(path)
    cameras = _camera(splats)
    activated = {k: v.double() for k, v in splats.activated().items()}
    viewmat = cameras.world_to_camera_cv().double()
    K = cameras.intrinsics.double()
    reference = project_gaussians(activated["means"], activated["quats"], activated["scales"], activated["opacities"],
                                  viewmat, K, cameras.width, cameras.height)
    params = {k: v.numpy() for k, v in activated.items()}
    fx, fy, cx, cy = float(K[0, 0, 0]), float(K[0, 1, 1]), float(K[0, 0, 2]), float(K[0, 1, 2])
    ours = viewport_math.project(params["means"], viewport_math.covariances(params["quats"], params["scales"]),
                                 params["opacities"], viewmat[0].numpy(), (fx, fy, cx, cy), cameras.width, cameras.height)
    visible = reference.visible[0].numpy()
    assert visible.sum() > 0.5 * len(splats)
    np.testing.assert_array_equal(ours["visible"], visible)
    np.testing.assert_allclose(ours["means2d"][visible], reference.means2d[0].numpy()[visible], rtol=1e-5)
    np.testing.assert_allclose(ours["depths"], reference.depths[0].numpy(), rtol=1e-5)
    conic_ref = reference.conics[0].numpy()[visible]
    np.testing.assert_allclose(ours["conics"][visible], conic_ref, rtol=1e-5, atol=1e-5 * np.abs(conic_ref).max())
    np.testing.assert_array_equal(ours["radii"], reference.radii[0].numpy())


@pytest.mark.parametrize("asset", ASSETS)
def test_sh_colours_and_depth_order_match_the_backend(asset):
    path = splat_asset(asset)
    splats = load_gaussian_ply(path)
    cameras = _camera(splats, elevation=-10.0)
    params = viewport_math.splat_parameters(_columns(path))
    centre = cameras.centers[0].double()
    dirs = splats.means.double() - centre
    for degree in range(splats.sh_degree + 1):
        reference = sh_to_color(degree, dirs, splats.sh_coeffs.double()).numpy()
        ours = viewport_math.sh_colors(params["sh"].astype(np.float64), dirs.numpy(), degree)
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6, err_msg=f"degree {degree}")
    viewmat = cameras.world_to_camera_cv()[0].double().numpy()
    order = viewport_math.back_to_front(params["means"].astype(np.float64), viewmat)
    depths = splats.means.double() @ torch.from_numpy(viewmat[2, :3]) + viewmat[2, 3]
    front_to_back = torch.sort(depths, stable=True).indices.numpy()  # the backend's order (rasterize.bin_gaussians)
    np.testing.assert_array_equal(order[::-1], front_to_back)


def test_gl_camera_conversions_agree_with_the_backend_cameras():
    splats = load_gaussian_ply(splat_asset("train-1000.ply"))
    cameras = _camera(splats, width=120, height=90)
    c2w_gl = cameras.c2w_gl[0].double().numpy()
    np.testing.assert_allclose(viewport_math.gl_view_to_cv(np.linalg.inv(c2w_gl)),
                               cameras.world_to_camera_cv()[0].double().numpy(), atol=1e-6)
    # A Blender perspective matrix for that camera (symmetric frustum, square pixels).
    fx = float(cameras.intrinsics[0, 0, 0])
    near, far = 0.1, 100.0
    projection = np.zeros((4, 4))
    projection[0, 0] = 2 * fx / cameras.width
    projection[1, 1] = 2 * fx / cameras.height
    projection[2, 2], projection[2, 3], projection[3, 2] = -(far + near) / (far - near), -2 * far * near / (far - near), -1
    got = viewport_math.intrinsics_from_projection(projection, cameras.width, cameras.height)
    K = cameras.intrinsics[0].double().numpy()
    np.testing.assert_allclose(got, (K[0, 0], K[1, 1], K[0, 2], K[1, 2]), rtol=1e-6)
    assert math.isclose(got[0], got[1])


def test_level_of_detail_keeps_the_most_visible_splats():
    rng = np.random.default_rng(0)
    opacities = rng.uniform(0.0, 1.0, 1000).astype(np.float32)
    scales = rng.uniform(0.01, 0.1, (1000, 3)).astype(np.float32)
    keep = viewport_math.level_of_detail(opacities, scales, 100)
    assert len(keep) == 100 and np.all(np.diff(keep) > 0)
    ordered = np.sort(scales, axis=1)
    importance = opacities * ordered[:, 2] * ordered[:, 1]
    assert importance[keep].min() >= np.sort(importance)[-100]
    np.testing.assert_array_equal(viewport_math.level_of_detail(opacities, scales, 5000), np.arange(1000))
