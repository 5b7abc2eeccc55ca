"""gsplat's CUDA rasterizer and the pure-torch path agree (needs CUDA; skipped elsewhere).

Stated tolerance (float32 on both sides; gsplat uses fast-math exp and sequential products, the
torch path exp(cumsum(log(1 - alpha))), so a fragment sitting exactly on the 1/255 or 1e-4 cut-off
can fall on different sides):
- colours, alphas: |diff| <= 1e-4 on at least 99.9 % of values, and <= 1e-2 everywhere;
- expected depth: the same, relative to the largest depth, where alpha > 0.01;
- radii: identical for at least 99.9 % of (camera, Gaussian) pairs (ceil of a float can differ);
- means2d: 1e-3 px where both keep the Gaussian;
- gradients of means, quats, scales, opacities, colours and means2d: relative L2 error <= 1e-3.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat agreement needs a CUDA device")

if torch.cuda.is_available():
    from radiantforge.gaussians.gsplat_bridge import GsplatUnavailable
    from radiantforge.gaussians.rasterize import rasterize
    from test_rasterize import make_cameras, make_scene

CLOSE_ATOL = 1e-4
CLOSE_FRACTION = 0.999
WORST_ATOL = 1e-2
GRAD_REL_L2 = 1e-3


def _render(backend, scene, viewmats, Ks, width, height, sh_degree, background):
    params = [t.clone().cuda().requires_grad_(True) for t in scene]
    try:
        colors, alphas, depths, info = rasterize(
            *params, viewmats.cuda(), Ks.cuda(), width, height, sh_degree=sh_degree,
            background=None if background is None else background.cuda(), backend=backend,
        )  # fmt: skip
    except GsplatUnavailable as error:
        pytest.skip(f"gsplat cannot run here: {error}")
    assert info["backend"] == backend
    info["means2d"].retain_grad()
    g = torch.Generator(device="cuda").manual_seed(0)
    loss = sum((torch.randn(out.shape, generator=g, device="cuda") * out).sum() for out in (colors, alphas))
    loss = loss + (torch.randn(depths.shape, generator=g, device="cuda") * alphas.detach() * depths).sum()
    loss.backward()
    grads = [p.grad for p in params] + [info["means2d"].grad]
    return colors.detach(), alphas.detach(), depths.detach(), info, grads


def _assert_mostly_close(a, b, atol, what):
    diff = (a - b).abs()
    assert (diff <= atol).float().mean() >= CLOSE_FRACTION, f"{what}: only {(diff <= atol).float().mean():.4%} within {atol}"
    assert diff.max() <= WORST_ATOL, f"{what}: worst difference {diff.max():.3g}"


@pytest.mark.parametrize("sh_degree", [None, 0, 3])
def test_gsplat_and_torch_agree(sh_degree):
    width, height = 96, 72
    viewmats, Ks = make_cameras(3, width, height)
    scene = make_scene(seed=7, n=2000, sh_coeffs=None if sh_degree is None else 16)
    background = torch.tensor([0.2, 0.4, 0.6])
    ours = _render("torch", scene, viewmats, Ks, width, height, sh_degree, background)
    theirs = _render("gsplat", scene, viewmats, Ks, width, height, sh_degree, background)

    _assert_mostly_close(ours[0], theirs[0], CLOSE_ATOL, "colours")
    _assert_mostly_close(ours[1], theirs[1], CLOSE_ATOL, "alphas")
    hit = (ours[1] > 0.01) & (theirs[1] > 0.01)
    depth_scale = float(theirs[2][hit].abs().max())
    _assert_mostly_close(ours[2][hit] / depth_scale, theirs[2][hit] / depth_scale, CLOSE_ATOL, "depths")

    radii_ours, radii_theirs = ours[3]["radii"], theirs[3]["radii"]
    assert (radii_ours == radii_theirs).all(-1).float().mean() >= CLOSE_FRACTION
    both = (radii_ours > 0).all(-1) & (radii_theirs > 0).all(-1)
    torch.testing.assert_close(ours[3]["means2d"][both], theirs[3]["means2d"][both], atol=1e-3, rtol=0)

    names = ("means", "quats", "scales", "opacities", "colors", "means2d")
    for name, g_ours, g_theirs in zip(names, ours[4], theirs[4]):
        if name == "means2d":  # only entries both kept carry a gradient
            g_ours, g_theirs = g_ours[both], g_theirs[both]
        rel = (g_ours - g_theirs).norm() / g_theirs.norm().clamp_min(1e-12)
        assert rel <= GRAD_REL_L2, f"{name}: relative L2 gradient error {rel:.3g}"


def test_auto_uses_gsplat_on_cuda():
    width, height = 32, 32
    viewmats, Ks = make_cameras(1, width, height)
    scene = [t.cuda() for t in make_scene(seed=1, n=100)]
    *_, info = rasterize(*scene, viewmats.cuda(), Ks.cuda(), width, height, backend="auto")
    # "auto" falls back to torch (with a warning) only when gsplat cannot compile or run.
    assert info["backend"] in ("gsplat", "torch")
    assert set(info) >= {"means2d", "radii", "depths", "width", "height", "n_cameras", "backend"}
    assert info["radii"].dtype == torch.int32 and info["radii"].shape == (1, 100, 2)
