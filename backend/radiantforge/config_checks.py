"""Checks of job settings (the config dataclasses of the Gaussian, texture and text-to-3D jobs).

Each check reads ``getattr(config, name)``, raises :class:`InputError` naming the field and what was
expected, and normalises the value in place where that is harmless (3.0 -> 3 for an integer, an
int -> float for a number), so that a config read from JSON behaves like one written in Python.
"""

from __future__ import annotations

import dataclasses
import math

from .errors import InputError, quoted

# Bounds shared by the jobs' settings. Every number a client sets is bounded, so that one job file
# cannot ask for days of work or all the memory before the first step (a job runs for whoever
# can reach the service).
# Seeds go to torch generators (64-bit) after mixing with other numbers; 32 bits leave room.
MAX_SEED = 2**32 - 1
# A turntable of one minute at 24 fps; longer orbits are a render job for Blender.
MAX_TURNTABLE_FRAMES = 1440
# Ten times the longest schedules in use (3DGS trains 30,000 steps; DreamFusion 10,000-15,000 SDS steps).
MAX_GAUSSIAN_STEPS = 300_000
MAX_GUIDED_STEPS = 100_000
# Coordinate MLPs: far beyond the widths and depths that fit (64-256 wide, 2-8 deep); each is
# allocated before the first step.
MAX_MLP_WIDTH = 1024
MAX_MLP_DEPTH = 16
# Fourier features beyond 2^16 cycles per unit are below float32's resolution on a unit-sized mesh.
MAX_FREQUENCIES = 16


def apply_overrides(config, config_class, overrides: dict, what: str):
    """``config`` (default ``config_class()``) with the fields in ``overrides`` replaced; unknown names
    and configs of another class are refused by name. ``what`` names the options, e.g. "texture"."""
    config = config if config is not None else config_class()
    if not isinstance(config, config_class):
        raise InputError(f"expected a {config_class.__name__}, got {type(config).__name__}", field="config")
    known = {f.name for f in dataclasses.fields(config_class)}
    for name in overrides:
        if name not in known:
            raise InputError(f"unknown {what} option; known: {', '.join(sorted(known))}", field=name)
    # Always a copy: the checks normalise fields in place, and the caller's config stays as it was.
    return dataclasses.replace(config, **overrides)


def check_integer(config, name: str, minimum: int | None = None, maximum: int | None = None) -> None:
    value = getattr(config, name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
        setattr(config, name, value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"expected an integer, got {quoted(value)}", field=name)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        span = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InputError(f"expected an integer {span}, got {value}", field=name)


def check_number(config, name: str, low=None, high=None, low_open=False, high_open=False) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"expected a number, got {quoted(value)}", field=name)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        raise InputError(f"expected a number in {left}{low}, {right}, got {value}", field=name)
    setattr(config, name, float(value))


def check_choice(config, name: str, choices) -> None:
    if getattr(config, name) not in choices:
        raise InputError(f"expected one of {', '.join(choices)}, got {quoted(getattr(config, name))}", field=name)


def check_boolean(config, name: str) -> None:
    if not isinstance(getattr(config, name), bool):
        raise InputError(f"expected true or false, got {quoted(getattr(config, name))}", field=name)


def check_range(config, name: str, lowest: float, highest: float, strict: bool = False) -> tuple[float, float]:
    """A (low, high) pair with low <= high inside [lowest, highest] (open bounds with ``strict``)."""
    value = getattr(config, name)
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"expected two numbers (low, high), got {quoted(value)}", field=name) from None
    inside = (lowest < low and high < highest) if strict else (lowest <= low and high <= highest)
    if not (math.isfinite(low) and math.isfinite(high) and inside and low <= high):
        bounds = f"({lowest}, {highest})" if strict else f"[{lowest}, {highest}]"
        raise InputError(f"expected (low, high) with low <= high, both in {bounds}, got {quoted(value)}", field=name)
    return low, high


def check_colour(value, name: str = "background") -> tuple[float, float, float]:
    """An R, G, B triple in [0, 1] as a tuple of floats."""
    try:
        colour = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"expected three numbers R, G, B in [0, 1], got {quoted(value)}", field=name) from None
    if len(colour) != 3 or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in colour):
        raise InputError(f"expected three numbers R, G, B in [0, 1], got {quoted(value)}", field=name)
    return colour
