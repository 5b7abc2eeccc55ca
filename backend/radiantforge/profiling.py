"""Where a training step's time goes: wall seconds per named section, summed over the steps of a run.

A job takes an optional :class:`StepProfile` and wraps the parts of its step in
``profile.section(name)``; with no profile the sections cost nothing (``NO_PROFILE``). Sections
may not nest. The backward pass is split at a tensor: :meth:`StepProfile.split_backward` times
``loss.backward()`` as "loss backward" until the gradient of the given tensor (the render) is
complete, and the rest as the "rasterizer backward" (the render's inputs' gradients are all the
autograd work left then).

Timings read ``time.perf_counter()``; on CUDA, ``synchronize=True`` waits for the device at each
section boundary so that kernel time lands in the section that launched it.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

import torch

OTHER = "other"


class StepProfile:
    """Wall seconds per section over the profiled steps; :meth:`table` prints them per step."""

    def __init__(self, synchronize: bool = False):
        self.seconds: dict[str, float] = defaultdict(float)
        self.steps = 0
        self.total = 0.0  # wall seconds of the profiled steps, sections or not
        self.synchronize = synchronize
        self.enabled = True

    def _now(self) -> float:
        if self.synchronize and torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        started = self._now()
        try:
            yield
        finally:
            self.seconds[name] += self._now() - started

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """One whole step: its wall time not covered by a section counts as "other"."""
        started = self._now()
        try:
            yield
        finally:
            self.total += self._now() - started
            self.steps += 1

    def split_backward(self, loss: torch.Tensor, render: torch.Tensor, loss_part: str = "loss backward",
                       render_part: str = "rasterizer backward") -> None:
        """``loss.backward()``, timed in two parts at the moment ``render``'s gradient is complete."""
        marks: list[float] = []
        handle = render.register_hook(lambda grad: marks.append(self._now()))
        started = self._now()
        try:
            loss.backward()
        finally:
            handle.remove()
        finished = self._now()
        split = marks[0] if marks else finished
        self.seconds[loss_part] += split - started
        self.seconds[render_part] += finished - split

    def per_step(self) -> dict[str, float]:
        """Seconds per step of every section, plus "other" (the rest of the step), in milliseconds."""
        steps = max(self.steps, 1)
        rows = {name: 1000.0 * seconds / steps for name, seconds in self.seconds.items()}
        rows[OTHER] = max(0.0, 1000.0 * self.total / steps - sum(rows.values()))
        return rows

    def table(self, title: str = "") -> str:
        rows = self.per_step()
        total = 1000.0 * self.total / max(self.steps, 1)
        lines = [f"{title} ({self.steps} steps, {total:.2f} ms per step)" if title else
                 f"{self.steps} steps, {total:.2f} ms per step",
                 f"{'section':<22} {'ms/step':>9} {'share':>7}"]
        for name, ms in sorted(rows.items(), key=lambda item: -item[1]):
            lines.append(f"{name:<22} {ms:>9.3f} {ms / max(total, 1e-12):>6.1%}")
        return "\n".join(lines)


class NoProfile:
    """What a job uses when nobody profiles it: every section is a no-op."""

    enabled = False

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        yield

    @staticmethod
    def split_backward(loss: torch.Tensor, render: torch.Tensor, *args, **kwargs) -> None:
        loss.backward()


NO_PROFILE = NoProfile()
