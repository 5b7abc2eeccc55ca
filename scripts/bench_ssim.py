"""The training loss's SSIM: fused backward (radiantforge.metrics._FusedSSIM) against plain autograd
through the same formula, in one process, alternating, median of repeats.

Usage::

    python scripts/bench_ssim.py [--threads 2] [--repeats 9]

Prints ms per forward+backward at 400x400 (lego400) and 160x90 (the truck-class capture) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from radiantforge import metrics


def unfused_loss(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """1 - SSIM with autograd through every intermediate (what the training loss did before)."""
    return 1.0 - metrics._ssim_terms(img.permute(0, 3, 1, 2), ref.permute(0, 3, 1, 2))[0].mean()


def fused_loss(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return 1.0 - metrics.ssim_map(img, ref).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for height, width in ((400, 400), (90, 160)):
        img = torch.rand(1, height, width, 3, requires_grad=True)
        ref = torch.rand(1, height, width, 3)
        seconds: dict[str, list[float]] = {"autograd": [], "fused": []}
        for _ in range(args.repeats + 1):  # the first round warms up and is dropped
            for name, loss in (("autograd", unfused_loss), ("fused", fused_loss)):
                start = time.perf_counter()
                loss(img, ref).backward()
                seconds[name].append(time.perf_counter() - start)
        median = {name: statistics.median(values[1:]) * 1000 for name, values in seconds.items()}
        print(f"{width}x{height}: autograd {median['autograd']:.1f} ms, fused {median['fused']:.1f} ms, "
              f"fused/autograd {median['fused'] / median['autograd']:.2f}")


if __name__ == "__main__":
    main()
