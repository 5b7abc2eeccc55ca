"""The rasterizer registry (radiantforge.gaussians.rasterizers): a choice resolved once per run, what
"auto" means per device, the error for an unknown name, the backends agreeing through one interface,
and the rules they share living in one module (raster_constants) that the Numba kernels read too.

Tolerances as in test_rasterize.py / test_rasterize_native.py (1e-4 absolute on images and alphas,
depth relative to the largest depth).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from radiantforge.errors import InputError
from radiantforge.gaussians import native, raster_constants
from radiantforge.gaussians import rasterize as rasterize_module
from radiantforge.gaussians.rasterize import rasterize
from radiantforge.gaussians.rasterizers import (RASTERIZER_CHOICES, RASTERIZERS, NativeRasterizer, RasterInputs,
                                                TorchRasterizer, prepare_rasterizer, resolve_rasterizer)

sys.path.insert(0, str(Path(__file__).parent))
from test_rasterize import IMAGE_TOL, make_cameras, make_scene  # noqa: E402


class Events:
    """Collects what a run would write to its events file."""

    def __init__(self):
        self.emitted = []

    def emit(self, type, **fields):
        self.emitted.append((type, fields.get("message", "")))


def native_runs() -> bool:
    return native.unavailable_reason() is None


def test_auto_resolved_once_renders_as_the_single_call_does():
    width, height = 24, 20
    viewmats, Ks = make_cameras(2, width, height)
    scene = make_scene(seed=3, n=60)
    background = torch.tensor([0.1, 0.5, 0.9])
    rasterizer = resolve_rasterizer("auto", "cpu")
    assert rasterizer == NativeRasterizer(fallback=TorchRasterizer())  # on the CPU: native, else torch
    assert resolve_rasterizer(rasterizer, "cpu") is rasterizer  # a resolved one passes through
    once = rasterize(*scene, viewmats, Ks, width, height, background=background, backend=rasterizer)
    per_call = rasterize(*scene, viewmats, Ks, width, height, background=background, backend="auto")
    assert once[3]["backend"] == per_call[3]["backend"] == ("native" if native_runs() else "torch")
    for a, b in zip(once[:3], per_call[:3]):
        assert torch.equal(a, b)
    # The Rasterizer interface itself, without the convenience function.
    direct = rasterizer.render(RasterInputs(*scene, viewmats, Ks, width, height, background=background))
    assert direct[3]["backend"] == once[3]["backend"] and torch.equal(direct[0], once[0])


def test_what_auto_means_on_each_device():
    assert RASTERIZER_CHOICES == ("auto", "native", "torch", "gsplat")
    assert set(RASTERIZERS) == {"native", "torch", "gsplat"}
    assert resolve_rasterizer("auto", "mps") == TorchRasterizer()  # Apple GPUs: the pure-PyTorch path
    if not torch.cuda.is_available():  # no CUDA: gsplat cannot run, so auto on "cuda" would be torch
        assert resolve_rasterizer("auto", "cuda") == TorchRasterizer()
    for name in RASTERIZERS:  # a name chosen by the user has no fallback: it raises where it cannot run
        assert resolve_rasterizer(name, "cpu").name == name and resolve_rasterizer(name, "cpu").fallback is None


def test_prepare_compiles_native_once_and_falls_back_with_a_warning_event(monkeypatch):
    if native_runs():
        events = Events()
        assert prepare_rasterizer("auto", torch.device("cpu"), events) == NativeRasterizer(fallback=TorchRasterizer())
        assert prepare_rasterizer("native", torch.device("cpu"), events) == NativeRasterizer()
    monkeypatch.setattr(native, "_failure", None)
    monkeypatch.setattr(native, "_warned", False)
    monkeypatch.setattr(native, "_ready_dtypes", set())
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now fails
    events = Events()
    with pytest.warns(RuntimeWarning, match="numba"):
        prepared = prepare_rasterizer("auto", torch.device("cpu"), events)
    assert prepared == TorchRasterizer()  # the run renders with torch from its first step on
    assert [t for t, _ in events.emitted] == ["warning"] and "PyTorch rasterizer instead" in events.emitted[0][1]
    with pytest.raises(native.NativeUnavailable, match="numba"):
        prepare_rasterizer("native", torch.device("cpu"), Events())


def test_an_unknown_name_names_the_field_and_the_known_backends():
    with pytest.raises(InputError) as caught:
        resolve_rasterizer("vulkan", "cpu", field="rasterize_backend")
    assert caught.value.field == "rasterize_backend"
    assert "vulkan" in str(caught.value) and all(name in str(caught.value) for name in RASTERIZER_CHOICES)
    with pytest.raises(InputError) as caught:
        prepare_rasterizer(["auto"], torch.device("cpu"))  # not even a string (a job.json list)
    assert caught.value.field == "rasterize_backend"
    viewmats, Ks = make_cameras(1, 8, 8)
    with pytest.raises(InputError) as caught:
        rasterize(*make_scene(seed=1, n=5), viewmats, Ks, 8, 8, backend="Native")
    assert caught.value.field == "backend" and "native, torch, gsplat" in str(caught.value)


@pytest.mark.skipif(not native_runs(), reason="the native rasterizer needs Numba")
@pytest.mark.parametrize("sh_degree", [None, 2])
def test_native_and_torch_agree_through_the_registry(sh_degree):
    width, height = 40, 32
    viewmats, Ks = make_cameras(2, width, height)
    scene = make_scene(seed=5, n=300, sh_coeffs=None if sh_degree is None else 9)
    inputs = RasterInputs(*scene, viewmats, Ks, width, height, sh_degree=sh_degree, background=torch.tensor([0.3, 0.2, 0.7]))
    ours = RASTERIZERS["native"]().render(inputs)
    theirs = RASTERIZERS["torch"]().render(inputs)
    assert (ours[3]["backend"], theirs[3]["backend"]) == ("native", "torch")
    assert float(theirs[1].max()) > 0.5  # the scene is really seen
    for name, a, b in zip(("colors", "alphas"), ours[:2], theirs[:2]):
        torch.testing.assert_close(a.double(), b.double(), atol=IMAGE_TOL, rtol=0, msg=lambda m: f"{name}: {m}")
    depth_scale = float(theirs[2].abs().max().clamp_min(1.0))
    torch.testing.assert_close(ours[2].double(), theirs[2].double(), atol=IMAGE_TOL * depth_scale, rtol=0)
    assert torch.equal(ours[3]["radii"], theirs[3]["radii"])
    assert set(ours[3]) >= {"means2d", "radii", "depths", "width", "height", "n_cameras", "backend", "stats"}
    assert set(ours[3]) == set(theirs[3])


def test_every_rasterizer_reads_the_rules_from_one_module():
    from radiantforge.gaussians import projection

    assert rasterize_module.MAX_ALPHA is raster_constants.MAX_ALPHA
    assert rasterize_module.TRANSMITTANCE_MIN is raster_constants.TRANSMITTANCE_MIN
    assert rasterize_module.BINNING_SLACK is raster_constants.BINNING_SLACK
    assert projection.ALPHA_THRESHOLD is raster_constants.ALPHA_THRESHOLD
    assert projection.MAX_EXTENT_SIGMAS is raster_constants.MAX_EXTENT_SIGMAS
    if native_runs():
        from radiantforge.gaussians.native import kernels

        for name in ("ALPHA_THRESHOLD", "MAX_ALPHA", "TRANSMITTANCE_MIN", "BINNING_SLACK", "MAX_EXTENT_SIGMAS",
                     "FOV_CLAMP_MARGIN"):  # fmt: skip
            assert getattr(kernels, name) is getattr(raster_constants, name), name
