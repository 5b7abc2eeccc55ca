"""``python -m radiantforge.service``: the same as ``radiantforge serve`` (for environments without
the console script, and for the tests)."""

from __future__ import annotations

import argparse
import sys

from .options import add_serve_arguments, serve_from_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radiantforge.service", description="Run the Radiant Forge backend service.")
    add_serve_arguments(parser)
    return serve_from_arguments(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
