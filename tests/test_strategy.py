"""Densification: gsplat's DefaultStrategy with the opacity reset fixed, the cap and the run-length schedule.

These tests drive the strategy with hand-made view-space gradients (no renderer), so each rule
is checked on Gaussians whose fate is known in advance.
"""

from __future__ import annotations

import math

import pytest
import torch

from radiantforge.gaussians import model, strategy
from radiantforge.gaussians.splats import GaussianSplats

WIDTH, HEIGHT = 64, 48


def make_state(n: int, *, scale: float = 0.001, opacity: float = 0.5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    splats = GaussianSplats(
        means=torch.randn(n, 3, generator=generator),
        scales=torch.full((n, 3), math.log(scale)),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        opacities=torch.full((n,), math.log(opacity / (1 - opacity))),
        sh0=torch.rand(n, 1, 3, generator=generator),
        shN=torch.zeros(n, 15, 3),
    )
    params = model.make_parameters(splats, "cpu")
    optimizers = model.make_optimizers(params, scene_extent=1.0)
    return params, optimizers


def fake_info(pixel_grads: torch.Tensor) -> dict:
    """What the rasterizer's info holds after backward, with means2d gradients ``pixel_grads`` (N, 2).

    The strategy normalises gradients by width/2 and height/2 (times the number of cameras), so
    these are gradients with respect to pixel positions.
    """
    n = len(pixel_grads)
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    (means2d * pixel_grads[None]).sum().backward()
    return {
        "means2d": means2d,
        "radii": torch.full((1, n, 2), 3, dtype=torch.int32),
        "width": WIDTH,
        "height": HEIGHT,
        "n_cameras": 1,
        "gaussian_ids": None,
    }


def pixel_gradient_for(normalised: float) -> float:
    """The x-gradient (per pixel) whose normalised size is ``normalised`` in the strategy's units."""
    return normalised / (WIDTH / 2.0)


def take_adam_step(params, optimizers):
    """One optimizer step so Adam holds state for every parameter (zero gradients: values stay put)."""
    loss = sum((p * 0.0).sum() for p in params.values())
    loss.backward()
    for opt in optimizers.values():
        opt.step()
        opt.zero_grad(set_to_none=True)


def schedule_tuple(schedule) -> tuple[int, int, int, int]:
    return (schedule.refine_start_iter, schedule.refine_stop_iter, schedule.refine_every, schedule.reset_every)


def test_schedule_is_the_reference_from_30k_and_keeps_its_100_step_cadence_in_short_runs():
    reference = strategy.refine_schedule(30_000)
    assert schedule_tuple(reference) == (500, 15_000, 100, 3_000)
    assert strategy.refine_schedule(60_000) == reference
    # Short runs: refine every 100 steps from 10% to 75% of the run, one opacity reset halfway.
    assert schedule_tuple(strategy.refine_schedule(2_000)) == (200, 1500, 100, 1000)
    assert schedule_tuple(strategy.refine_schedule(7_000)) == (500, 5250, 100, 3000)
    for iters in (1, 5, 50, 200, 999, 1000, 1500, 4000, 20_000):
        s = strategy.refine_schedule(iters)
        assert 1 <= s.refine_start_iter < s.refine_stop_iter, iters
        assert s.refine_stop_iter <= max(iters, 2), iters
        assert s.refine_every >= strategy.MIN_REFINE_EVERY, iters
        # A reset leaves room for refinements after it to regrow what it removed.
        assert s.reset_every >= strategy.MIN_REFINEMENTS_AFTER_RESET * s.refine_every, iters
    tiny = strategy.refine_schedule(200)
    assert tiny.refine_every == strategy.MIN_REFINE_EVERY
    assert (tiny.refine_stop_iter - tiny.refine_start_iter) // tiny.refine_every >= 10


def test_opacity_reset_fires_on_schedule_and_clears_adam_state():
    params, optimizers = make_state(16, opacity=0.9)
    take_adam_step(params, optimizers)
    s = strategy.CappedDefaultStrategy(refine_start_iter=10_000, refine_stop_iter=20_000, reset_every=5)
    state = s.initialize_state(scene_scale=1.0)
    grads = torch.zeros(16, 2)
    for step in range(1, 5):
        report = s.step_post_backward(params, optimizers, state, step, fake_info(grads))
        assert report["reset"] == 0
    assert torch.sigmoid(params["opacities"]).min() > 0.85
    report = s.step_post_backward(params, optimizers, state, 5, fake_info(grads))
    assert report["reset"] == 1
    reset_value = s.prune_opa * strategy.RESET_OPACITY_FACTOR
    assert torch.allclose(torch.sigmoid(params["opacities"]), torch.full((16,), reset_value), atol=1e-6)
    opacity_state = optimizers["opacities"].state[params["opacities"]]
    assert opacity_state["exp_avg"].abs().sum() == 0 and opacity_state["exp_avg_sq"].abs().sum() == 0
    # The optimizer now updates the new tensor (gsplat swaps the Parameter object).
    assert optimizers["opacities"].param_groups[0]["params"][0] is params["opacities"]


def test_no_reset_after_refinement_stops():
    params, optimizers = make_state(4, opacity=0.9)
    s = strategy.CappedDefaultStrategy(refine_start_iter=10_000, refine_stop_iter=8, reset_every=5)
    state = s.initialize_state()
    s.step_post_backward(params, optimizers, state, 10, fake_info(torch.zeros(4, 2)))
    assert torch.sigmoid(params["opacities"]).min() > 0.85


def test_grow_duplicates_small_and_splits_large_high_gradient_gaussians():
    params, optimizers = make_state(10, scale=0.001)
    with torch.no_grad():
        params["scales"][5:] = math.log(0.5)  # large: split; the first five are small: duplicate
    take_adam_step(params, optimizers)
    s = strategy.CappedDefaultStrategy(refine_start_iter=0, refine_every=1, reset_every=1000, grow_grad2d=0.01)
    state = s.initialize_state(scene_scale=1.0)
    grads = torch.zeros(10, 2)
    grads[[0, 1, 6], 0] = pixel_gradient_for(0.1)  # above the threshold: 2 duplicates, 1 split
    grads[[2, 7], 0] = pixel_gradient_for(0.001)  # below
    means_before = params["means"].detach().clone()
    report = s.step_post_backward(params, optimizers, state, 1, fake_info(grads))
    assert (report["duplicated"], report["split"]) == (2, 1)
    assert len(params["means"]) == 10 + 2 + 1
    # Every parameter and its Adam state grew together.
    for name, param in params.items():
        assert len(param) == 13
        assert optimizers[name].state[param]["exp_avg"].shape == param.shape
    # The split Gaussian (index 6) is gone and two smaller ones (scale / 1.6) replace it.
    scales = torch.exp(params["scales"]).max(dim=-1).values
    assert torch.isclose(scales, torch.tensor(0.5 / 1.6), atol=1e-6).sum() == 2
    assert not any(torch.equal(m, means_before[6]) for m in params["means"].detach())


def test_cap_grows_only_the_highest_gradients_up_to_the_cap():
    n, cap = 30, 36
    params, optimizers = make_state(n, scale=0.001)
    take_adam_step(params, optimizers)
    s = strategy.CappedDefaultStrategy(refine_start_iter=0, refine_every=1, reset_every=1000, grow_grad2d=0.01,
                                       max_gaussians=cap)
    state = s.initialize_state(scene_scale=1.0)
    grads = torch.zeros(n, 2)
    # 20 candidates with distinct gradients; only the 6 largest fit under the cap.
    candidates = torch.arange(20)
    grads[candidates, 0] = pixel_gradient_for(0.02) * (1 + candidates.float())
    means_before = params["means"].detach().clone()
    report = s.step_post_backward(params, optimizers, state, 1, fake_info(grads))
    assert report["duplicated"] == cap - n
    assert len(params["means"]) == cap
    duplicated_means = params["means"].detach()[n:]
    assert torch.equal(duplicated_means, means_before[14:20])  # the six highest gradients, in index order

    # Full: more high gradients grow nothing, and the count never passes the cap.
    report = s.step_post_backward(params, optimizers, state, 2, fake_info(torch.full((cap, 2), 1.0)))
    assert report["duplicated"] + report["split"] == 0
    assert len(params["means"]) == cap


def test_prune_removes_transparent_gaussians():
    params, optimizers = make_state(8, opacity=0.5)
    with torch.no_grad():
        params["opacities"][[1, 4]] = -10.0  # opacity ~4.5e-5, below prune_opa
    take_adam_step(params, optimizers)
    s = strategy.CappedDefaultStrategy(refine_start_iter=0, refine_every=1, reset_every=1000)
    state = s.initialize_state()
    kept_means = params["means"].detach()[[0, 2, 3, 5, 6, 7]].clone()
    report = s.step_post_backward(params, optimizers, state, 1, fake_info(torch.zeros(8, 2)))
    assert report["pruned"] == 2
    assert torch.equal(params["means"].detach(), kept_means)


def test_make_strategy_uses_the_schedule_takes_overrides_and_rejects_unknown_names():
    s = strategy.make_strategy("default", 3_000, max_gaussians=1000, grow_grad2d=0.0004)
    assert (s.refine_every, s.reset_every, s.max_gaussians, s.grow_grad2d) == (100, 1500, 1000, 0.0004)
    s = strategy.make_strategy("default", 3_000, max_gaussians=None, refine_every=50, reset_every=600)
    assert (s.refine_start_iter, s.refine_every, s.reset_every) == (300, 50, 600)
    with pytest.raises(ValueError, match="unknown densification strategy"):
        strategy.make_strategy("nope", 100, max_gaussians=None)


# ------------------------------------------------------------------------------------------ MCMC


def paper_relocation(opacity: float, scale: float, n: int) -> tuple[float, float]:
    """Eq. 9 of the MCMC paper written as the double sum (as gsplat's CUDA kernel loops it)."""
    new_opacity = 1.0 - (1.0 - opacity) ** (1.0 / n)
    denominator = 0.0
    for i in range(1, n + 1):
        for k in range(i):
            denominator += math.comb(i - 1, k) * (-1) ** k / math.sqrt(k + 1) * new_opacity ** (k + 1)
    return new_opacity, scale * opacity / denominator


def test_mcmc_relocation_matches_the_paper_formula():
    opacities = torch.tensor([0.9, 0.5, 0.2, 0.05, 0.7, 0.99, 0.3])
    copies = torch.tensor([1, 2, 3, 5, 8, 13, 30])
    scales = torch.rand(7, 3, generator=torch.Generator().manual_seed(0)) + 0.1
    new_o, new_s = strategy.relocation_opacity_and_scale(opacities, scales, copies)
    for i in range(7):
        expected_o, expected_factor = paper_relocation(opacities[i].item(), 1.0, int(copies[i]))
        assert new_o[i].item() == pytest.approx(expected_o, rel=1e-5)
        assert torch.allclose(new_s[i], scales[i] * expected_factor, rtol=1e-4)
    # n copies stacked at the centre are exactly as opaque as the original there.
    assert torch.allclose(1 - (1 - new_o.double()) ** copies, opacities.double(), atol=1e-6)
    # One copy is the Gaussian itself.
    assert new_o[0] == pytest.approx(0.9) and torch.allclose(new_s[0], scales[0])


def test_covariances_match_gsplat_torch_reference():
    from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci

    generator = torch.Generator().manual_seed(1)
    quats = torch.randn(20, 4, generator=generator)
    scales = torch.rand(20, 3, generator=generator) + 0.05
    expected, _ = _quat_scale_to_covar_preci(torch.nn.functional.normalize(quats, dim=-1), scales,
                                             compute_preci=False, triu=False)
    assert torch.allclose(strategy.covariances(quats, scales), expected, atol=1e-6)


def test_mcmc_relocates_dead_gaussians_and_grows_up_to_the_cap():
    n = 40
    params, optimizers = make_state(n, opacity=0.5)
    with torch.no_grad():
        params["opacities"][:10] = -10.0  # dead
        params["opacities"][10] = 4.0  # one very opaque Gaussian draws most of the relocations
    take_adam_step(params, optimizers)
    s = strategy.TorchMCMCStrategy(cap_max=n + 1, refine_start_iter=0, refine_every=1, noise_lr=0.0)
    state = s.initialize_state()
    torch.manual_seed(0)
    report = s.step_post_backward(params, optimizers, state, 1, {}, lr=1e-3)
    assert report == {"relocated": 10, "added": 1}  # 5% of 40 = 2 wanted, the cap allows 1
    assert len(params["means"]) == n + 1
    opacities = torch.sigmoid(params["opacities"])
    assert opacities.min() > s.min_opacity  # nothing dead is left
    # Every relocated Gaussian sits exactly on a living one (same mean), sharing its opacity.
    for index in range(10):
        same = (params["means"][index] == params["means"][10:]).all(dim=-1)
        assert same.any()
    for name, param in params.items():
        assert optimizers[name].state[param]["exp_avg"].shape == param.shape

    report = s.step_post_backward(params, optimizers, state, 2, {}, lr=1e-3)
    assert report["added"] == 0 and len(params["means"]) == n + 1


def test_mcmc_noise_moves_transparent_gaussians_not_opaque_ones():
    params, optimizers = make_state(2, opacity=0.5, scale=0.1)
    with torch.no_grad():
        params["opacities"][0] = 8.0  # opacity 0.9997: the noise gate is shut
        params["opacities"][1] = -4.0  # opacity 0.018: fully open
    before = params["means"].detach().clone()
    s = strategy.TorchMCMCStrategy(refine_start_iter=10_000)
    s.step_post_backward(params, optimizers, s.initialize_state(), 1, {}, lr=1e-4)
    moved = (params["means"].detach() - before).norm(dim=-1)
    assert moved[0] < 1e-6 < moved[1]


def test_make_strategy_mcmc_has_its_schedule_and_takes_the_cap():
    s = strategy.make_strategy("mcmc", 3_000, max_gaussians=777)
    assert isinstance(s, strategy.TorchMCMCStrategy)
    assert (s.cap_max, s.refine_start_iter, s.refine_stop_iter, s.refine_every) == (777, 300, 2500, 100)
    assert strategy.make_strategy("mcmc", 30_000, max_gaussians=None).refine_stop_iter == 25_000


def test_mcmc_growth_follows_the_30k_curve_over_the_window():
    """gsplat grows 5% at each of the 244 refinements of a 30k run; a shorter window grows as much in all."""
    long = strategy.make_strategy("mcmc", 30_000, max_gaussians=None)
    assert long.growth == pytest.approx(1.05)
    short = strategy.make_strategy("mcmc", 2_000, max_gaussians=None)
    refinements = [step for step in range(2_000) if short.refine_start_iter < step < short.refine_stop_iter
                   and step % short.refine_every == 0]
    assert len(refinements) == strategy.refinement_count(short.refine_start_iter, short.refine_stop_iter,
                                                         short.refine_every) == 14
    assert short.growth ** len(refinements) == pytest.approx(1.05 ** 244)
    # The window a job sets is the one the growth is computed for; an explicit growth is kept.
    sparse = strategy.make_strategy("mcmc", 2_000, max_gaussians=None, refine_every=200)
    assert sparse.growth ** 7 == pytest.approx(1.05 ** 244)
    assert strategy.make_strategy("mcmc", 2_000, max_gaussians=None, growth=1.1).growth == 1.1
    # The strategy itself, stepped through a 2,000-step run, grows 40 Gaussians as the 30k curve does.
    params, optimizers = make_state(40, opacity=0.5)
    take_adam_step(params, optimizers)
    short.noise_lr, short.cap_max = 0.0, 100_000
    state = short.initialize_state()
    torch.manual_seed(0)
    for step in refinements[:7]:  # 7 of its 14 refinements: as far as the 30k run after 122 of its 244
        short.step_post_backward(params, optimizers, state, step, {}, lr=1e-3)
    assert 40 * 1.05 ** 122 / 1.05 < len(params["means"]) <= 40 * 1.05 ** 122
    for step in refinements[7:]:
        short.step_post_backward(params, optimizers, state, step, {}, lr=1e-3)
    assert len(params["means"]) == 100_000  # the cap, as 40 * 1.05**244 (5.8M) would pass it


def test_sh_degree_schedule_follows_the_run_length():
    """3DGS raises the SH degree every 1000 steps; a short run reaches degree 3 at 3/8 of its steps."""
    from radiantforge.gaussians.config import GaussianTrainConfig
    from radiantforge.gaussians.train import active_sh_degree

    assert strategy.sh_degree_interval_for(30_000) == 1000
    assert strategy.sh_degree_interval_for(7000) == 875
    assert strategy.sh_degree_interval_for(2000) == 250
    assert strategy.sh_degree_interval_for(3) == 1
    short = GaussianTrainConfig(steps=2000)
    assert [active_sh_degree(step, short) for step in (0, 249, 250, 500, 749, 750, 1999)] == [0, 0, 1, 2, 2, 3, 3]
    # The interval is read from config.steps when it is used (a time budget sets steps after the config is made).
    budgeted = GaussianTrainConfig(steps=800)
    assert active_sh_degree(300, budgeted) == 3
    fixed = GaussianTrainConfig(steps=2000, sh_degree=2, sh_degree_interval=1000)
    assert [active_sh_degree(step, fixed) for step in (999, 1000, 1999)] == [0, 1, 1]
    with pytest.raises(Exception, match="sh_degree_interval"):
        GaussianTrainConfig(sh_degree_interval=0)
