"""The native CPU rasterizer (radiantforge.gaussians.native, Numba) against the pure-PyTorch path,
the dense float64 reference (tests/reference_rasterizer.py) and finite differences.

Tolerances as in test_rasterize.py: images, alphas and depths to 1e-4 absolute (depth relative to
the largest depth), gradients to 1e-4 relative to the largest entry of each parameter's gradient.
The first run on a machine compiles the kernels (float32 and float64, about 20 s each on this
2-core CPU); Numba caches them on disk, so later runs take a few seconds.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import pytest
import numpy as np
import torch

pytest.importorskip("numba", reason="the native rasterizer needs Numba (pip install numba)")

from radiantforge.gaussians import native  # noqa: E402
from radiantforge.gaussians.rasterize import rasterize  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from reference_rasterizer import reference_radii, reference_rasterize  # noqa: E402
from test_rasterize import SPLATS, donut_patch, make_cameras, make_scene, scene_around_the_camera  # noqa: E402

IMAGE_TOL = 1e-4
GRAD_RTOL = 1e-4
PARAMETER_NAMES = ("means", "quats", "scales", "opacities", "colors")


def render_and_grads(backend, scene, viewmats, Ks, width, height, *, sh_degree=None, background=None, seed=0,
                     dtype=torch.float32):  # fmt: skip
    """Outputs and parameter gradients of a fixed random linear loss on colour, alpha and alpha-weighted depth."""
    params = [t.detach().clone().to(dtype).requires_grad_(True) for t in scene]
    outputs = rasterize(*params, viewmats.to(dtype), Ks.to(dtype), width, height, sh_degree=sh_degree,
                        background=background, backend=backend)  # fmt: skip
    colors, alphas, depths, info = outputs
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(t.shape, generator=g, dtype=torch.float64).to(dtype) for t in (colors, alphas, depths)]
    # Expected depth divides by alpha; weight it by alpha as depth losses in practice do (see test_rasterize.py).
    weights[2] = weights[2] * alphas.detach()
    sum((w * out).sum() for w, out in zip(weights, (colors, alphas, depths))).backward()
    return (colors.detach(), alphas.detach(), depths.detach()), [p.grad for p in params], info


def assert_images_close(ours, theirs, atol=IMAGE_TOL):
    for name, a, b in zip(("colors", "alphas"), ours[:2], theirs[:2]):
        torch.testing.assert_close(a.double(), b.double(), atol=atol, rtol=0, msg=lambda m: f"{name}: {m}")
    depth_scale = float(theirs[2].abs().max().clamp_min(1.0))
    torch.testing.assert_close(ours[2].double(), theirs[2].double(), atol=atol * depth_scale, rtol=0)


def assert_grads_close(ours, theirs, rtol=GRAD_RTOL):
    for name, a, b in zip(PARAMETER_NAMES, ours, theirs):
        scale = float(b.abs().max())
        assert scale > 0, f"{name}: the scene produced no gradient at all"
        torch.testing.assert_close(a.double(), b.double(), atol=rtol * scale, rtol=0, msg=lambda m: f"{name}: {m}")


def compare_with_torch(scene, viewmats, Ks, width, height, **kwargs):
    native_out, native_grads, info = render_and_grads("native", scene, viewmats, Ks, width, height, **kwargs)
    torch_out, torch_grads, torch_info = render_and_grads("torch", scene, viewmats, Ks, width, height, **kwargs)
    assert info["backend"] == "native" and torch_info["backend"] == "torch"
    assert_images_close(native_out, torch_out)
    assert_grads_close(native_grads, torch_grads)
    assert torch.equal(info["radii"], torch_info["radii"])
    return native_out


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_matches_torch_path_with_sh(sh_degree):
    """Three cameras, an image size that is not a multiple of the tile, and make_scene's awkward
    members: tiny, huge, far off-screen, behind the cameras, at the 1/255 cut-off, an opaque stack."""
    width, height = 37, 29
    viewmats, Ks = make_cameras(3, width, height)
    scene = make_scene(seed=10 + sh_degree, n=80, sh_coeffs=16)
    background = torch.tensor([[0.1, 0.5, 0.9], [0.0, 0.0, 0.0], [1.0, 0.2, 0.3]])
    colors, alphas, _ = compare_with_torch(scene, viewmats, Ks, width, height, sh_degree=sh_degree, background=background)
    assert float(alphas.min()) < 0.01 and float(alphas.max()) > 1 - 2e-4  # empty and terminated pixels


@pytest.mark.parametrize("n_features", [3, 5])
def test_matches_torch_path_with_features_and_deep_tiles(n_features):
    """Plain features (3 channels: the 4-channel fast loop; 5: the general one), one background for
    all cameras, and hundreds of thin layers per tile before the pixels terminate."""
    width, height = 40, 34
    viewmats, Ks = make_cameras(2, width, height, radius=2.5)
    means, quats, scales, opacities, colors = make_scene(seed=3, n=400, n_features=n_features)
    compare_with_torch((means, quats, scales, opacities * 0.25, colors), viewmats, Ks, width, height,
                       background=torch.rand(n_features))  # fmt: skip


def test_gaussians_behind_and_straddling_the_camera():
    scene, viewmats, Ks = scene_around_the_camera(32, 24)
    compare_with_torch(scene, viewmats, Ks, 32, 24)


def test_no_gaussians_and_one_gaussian():
    width, height = 16, 12
    viewmats, Ks = make_cameras(2, width, height)
    background = torch.tensor([0.25, 0.5, 0.75])
    empty = [torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3)]
    colors, alphas, depths, info = rasterize(*empty, viewmats, Ks, width, height, background=background, backend="native")
    assert torch.equal(colors, background.expand(2, height, width, 3)) and not alphas.any() and not depths.any()
    assert info["means2d"].shape == (2, 0, 2) and info["radii"].shape == (2, 0, 2)

    one = (torch.tensor([[0.05, -0.1, 0.0]]), torch.tensor([[1.0, 0.2, 0.1, 0.0]]), torch.tensor([[0.3, 0.2, 0.25]]),
           torch.tensor([0.8]), torch.tensor([[0.9, 0.1, 0.4]]))  # fmt: skip
    compare_with_torch(one, viewmats, Ks, width, height, background=background)


def test_float64_matches_reference_to_rounding():
    """In float64 the native path and the dense reference must agree to rounding, gradients included:
    the kernels approximate nothing (their exp is accurate to 4e-16 in float64)."""
    width, height = 37, 29
    viewmats, Ks = make_cameras(2, width, height)
    scene = make_scene(seed=21, n=80, sh_coeffs=16)
    background = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64)
    ours, our_grads, info = render_and_grads("native", scene, viewmats, Ks, width, height, sh_degree=3,
                                             background=background, dtype=torch.float64)  # fmt: skip
    ref_params = [t.double().requires_grad_(True) for t in scene]
    ref = reference_rasterize(*ref_params, viewmats, Ks, width, height, sh_degree=3, background=background)
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in ref]
    weights[2] = weights[2] * ref[1].detach()
    sum((w * out).sum() for w, out in zip(weights, ref)).backward()
    for out, expected in zip(ours, ref):
        torch.testing.assert_close(out, expected.detach(), atol=1e-10, rtol=0)
    for name, grad, p in zip(PARAMETER_NAMES, our_grads, ref_params):
        torch.testing.assert_close(grad, p.grad, atol=1e-9 * float(p.grad.abs().max()), rtol=0, msg=lambda m: f"{name}: {m}")
    assert torch.equal(info["radii"], reference_radii(*scene[:4], viewmats, Ks, width, height))


def test_gradcheck_float64():
    """torch.autograd.gradcheck (finite differences) through projection, SH and compositing.

    A small scene away from the non-smooth places (alpha cap, early termination, colour clamp):
    every fragment is well inside its ellipse or far outside, so the loss is smooth there."""
    torch.manual_seed(0)
    width, height = 14, 11
    viewmats, Ks = make_cameras(2, width, height, radius=3.0)
    viewmats, Ks = viewmats.double(), Ks.double()
    means = (torch.randn(4, 3) * 0.25).double().requires_grad_(True)
    quats = torch.randn(4, 4).double().requires_grad_(True)
    scales = torch.full((4, 3), 0.25).add(torch.rand(4, 3) * 0.1).double().requires_grad_(True)
    opacities = torch.tensor([0.45, 0.6, 0.3, 0.5], dtype=torch.float64, requires_grad=True)
    sh = (torch.randn(4, 4, 3) * 0.15).double()
    sh[:, 0] += 1.0
    sh.requires_grad_(True)

    def render(means, quats, scales, opacities, sh):
        colors, alphas, depths, _ = rasterize(means, quats, scales, opacities, sh, viewmats, Ks, width, height,
                                              sh_degree=1, backend="native")  # fmt: skip
        return colors, alphas, depths * alphas

    # One thread: gradcheck makes ~1,500 tiny forward/backward calls, and with two OpenMP threads on
    # a busy machine each parallel region can wait for a descheduled thread (tens of seconds in all).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert torch.autograd.gradcheck(render, (means, quats, scales, opacities, sh), eps=1e-6, atol=1e-6, rtol=1e-4)
    finally:
        torch.set_num_threads(threads)


def test_same_inputs_give_identical_results_and_threads_agree():
    """Deterministic (training resumes bit for bit), and 1 or 2 threads only change the order in
    which per-thread gradient buffers are summed."""
    width, height = 48, 40
    viewmats, Ks = make_cameras(2, width, height)
    scene = make_scene(seed=7, n=300, sh_coeffs=4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first = render_and_grads("native", scene, viewmats, Ks, width, height, sh_degree=1)
        second = render_and_grads("native", scene, viewmats, Ks, width, height, sh_degree=1)
        torch.set_num_threads(1)
        single = render_and_grads("native", scene, viewmats, Ks, width, height, sh_degree=1)
        assert torch.get_num_threads() == 1  # the kernels' thread pool does not override torch's setting
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(first[0] + tuple(first[1]), second[0] + tuple(second[1])):
        assert torch.equal(a, b)
    for a, b in zip(first[0], single[0]):
        assert torch.equal(a, b)  # each pixel is composited by one worker, whatever their number
    assert_grads_close(single[1], first[1], rtol=1e-6)


@pytest.mark.skipif(not (SPLATS / "donut-sh0.ply").exists(), reason="shared splat assets not present")
def test_real_donut_patch_matches_torch_path():
    """A dense, opaque patch of the real donut: deep tiles, early termination."""
    scene, viewmats, Ks = donut_patch(2000, 72, 56)
    _, alphas, _ = compare_with_torch(scene, viewmats, Ks, 72, 56, sh_degree=0, background=torch.tensor([0.0, 1.0, 0.0]))
    assert float(alphas.max()) > 1 - 2e-4


def test_backend_choice_and_inputs_it_does_not_take():
    width, height = 16, 16
    viewmats, Ks = make_cameras(1, width, height)
    scene = make_scene(seed=2, n=20)
    *_, info = rasterize(*scene, viewmats, Ks, width, height, backend="auto")
    assert info["backend"] == "native"  # auto on the CPU
    # Camera gradients are the torch path's: auto uses it, native says why it cannot.
    moving = viewmats.clone().requires_grad_(True)
    *_, info = rasterize(*scene, moving, Ks, width, height, backend="auto")
    assert info["backend"] == "torch"
    with pytest.raises(ValueError, match="viewmats or Ks"):
        rasterize(*scene, moving, Ks, width, height, backend="native")
    with pytest.raises(ValueError, match="float32 or float64"):
        rasterize(*(t.half() for t in scene), viewmats.half(), Ks.half(), width, height, backend="native")


def test_missing_numba_warns_once_and_falls_back(monkeypatch):
    """Without Numba, auto warns once and renders with the torch path; native raises NativeUnavailable."""
    width, height = 16, 12
    viewmats, Ks = make_cameras(1, width, height)
    scene = make_scene(seed=4, n=30)
    monkeypatch.setattr(native, "_failure", None)
    monkeypatch.setattr(native, "_warned", False)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now raises ImportError
    with pytest.warns(RuntimeWarning, match="pip install numba") as caught:
        colors, *_, info = rasterize(*scene, viewmats, Ks, width, height, backend="auto")
    assert len(caught) == 1 and info["backend"] == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call must not warn again
        *_, info = rasterize(*scene, viewmats, Ks, width, height, backend="auto")
    assert info["backend"] == "torch"
    with pytest.raises(native.NativeUnavailable, match="numba"):
        rasterize(*scene, viewmats, Ks, width, height, backend="native")


def test_forked_child_is_told_why_it_cannot_use_the_kernels(monkeypatch):
    """After fork() in a process whose kernels ran, Numba would terminate the child at the next
    kernel (GNU OpenMP is not fork-safe); the at-fork hook makes native say why instead. Called
    directly here: a real forked child of this process would hang in torch's own OpenMP too."""
    width, height = 16, 12
    viewmats, Ks = make_cameras(1, width, height)
    scene = make_scene(seed=4, n=30)
    rasterize(*scene, viewmats, Ks, width, height, backend="native")  # the kernels have run
    monkeypatch.setattr(native, "_failure", None)
    monkeypatch.setattr(native, "_warned", False)
    native._after_fork_in_child()
    with pytest.raises(native.NativeUnavailable, match="forked"):
        rasterize(*scene, viewmats, Ks, width, height, backend="native")
    with pytest.warns(RuntimeWarning, match="spawn"):
        *_, info = rasterize(*scene, viewmats, Ks, width, height, backend="auto")
    assert info["backend"] == "torch"


def test_fast_exp_is_accurate():
    """The kernels' exp(-x) (plain arithmetic, so that the pixel loops vectorise) against math.exp."""
    import numpy as np
    from numba import njit

    from radiantforge.gaussians.native.fastexp import EXP_INPUT_MAX, exp_neg

    @njit(cache=False)
    def evaluate(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = exp_neg(x[i])
        return out

    for dtype, bound in ((np.float32, 2e-7), (np.float64, 1e-15)):
        x = np.linspace(0.0, EXP_INPUT_MAX, 20001).astype(dtype)
        expected = np.array([math.exp(-float(v)) for v in x])
        relative = np.abs(evaluate(x).astype(np.float64) - expected) / expected
        assert relative.max() < bound, f"{dtype.__name__}: {relative.max()}"


def test_getting_ready_leaves_the_global_random_state_alone(monkeypatch):
    """The warm-up must draw nothing from torch's global RNG: a training run resumed from a checkpoint
    restores that RNG just before and must draw the same numbers as the run it continues."""
    monkeypatch.setattr(native, "_ready_dtypes", set())  # as in a fresh process
    before = torch.get_rng_state()
    assert native.ensure_ready(torch.float32, required=True)
    assert torch.equal(torch.get_rng_state(), before)


def test_render_and_eval_commands_run_native_in_a_fresh_process(tmp_path):
    """`render` and `eval` render under torch.no_grad(); the kernels' warm-up (which runs a backward
    pass) once failed there and turned the native rasterizer off for the whole process."""
    import json
    import subprocess

    from radiantforge.gaussians.ply import save_gaussian_ply
    from radiantforge.gaussians.splats import GaussianSplats, rgb_to_sh0

    generator = torch.Generator().manual_seed(3)
    count = 300
    splats = GaussianSplats(
        means=torch.randn(count, 3, generator=generator) * 0.4, scales=torch.full((count, 3), math.log(0.08)),
        quats=torch.nn.functional.normalize(torch.randn(count, 4, generator=generator), dim=-1),
        opacities=torch.full((count,), 1.0), sh0=rgb_to_sh0(torch.rand(count, 1, 3, generator=generator)),
        shN=torch.zeros(count, 0, 3))
    ply = tmp_path / "splats.ply"
    save_gaussian_ply(ply, splats)
    frames = {}
    for backend in ("native", "torch"):
        out = tmp_path / backend
        completed = subprocess.run(
            [sys.executable, "-W", "error::RuntimeWarning", "-m", "radiantforge", "render", str(ply), "--out", str(out),
             "--orbit", "2", "--size", "32x24", "--device", "cpu", "--rasterizer", backend],
            capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        written = json.loads(completed.stdout)
        frames[backend] = sorted(Path(written["frames"]).glob("*.png"))
    from PIL import Image

    assert len(frames["native"]) == len(frames["torch"]) == 2
    for native_frame, torch_frame in zip(frames["native"], frames["torch"]):
        difference = np.abs(np.asarray(Image.open(native_frame), np.int16) - np.asarray(Image.open(torch_frame), np.int16))
        assert difference.max() <= 1, "the two backends must render the same frames (8-bit rounding aside)"


@pytest.mark.parametrize("argv, expected", [
    (["/venv/bin/radiantforge", "render", "scene.ply"], "radiantforge render"),
    (["/repo/backend/radiantforge/__main__.py", "eval", "--rasterizer", "auto"], "radiantforge eval"),
    (["/repo/scripts/bench_train.py", "--profile"], "bench_train.py"),
])
def test_the_fallback_warning_names_the_command_that_fell_back(monkeypatch, argv, expected):
    from radiantforge.gaussians import native

    monkeypatch.setattr(sys, "argv", argv)
    assert native.running_command() == expected
