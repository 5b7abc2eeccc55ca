"""``python -m radiantforge.service``: the same as ``radiantforge serve`` (for environments without
the console script, and for the tests)."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from .server import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, serve
from .app import DEFAULT_MAX_UPLOAD_MB
from .scheduler import DEFAULT_CANCEL_GRACE_S


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``serve`` (shared with the ``radiantforge serve`` subcommand)."""
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}; anything beyond loopback needs --token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one, see ROOT/service.json)")
    parser.add_argument("--token", default=None, help=f"require 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV})")
    parser.add_argument("--root", default=None, help="folder for jobs and results (default: the per-user data folder)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, help=f"largest job archive accepted (default {DEFAULT_MAX_UPLOAD_MB})")
    parser.add_argument("--device", default=None, help="run every job on this device (auto, cpu, cuda, mps; default: the job's own setting)")
    parser.add_argument("--cancel-grace", type=float, default=DEFAULT_CANCEL_GRACE_S, help="seconds a cancelled job gets to checkpoint before it is killed")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def serve_from_arguments(args: argparse.Namespace) -> int:
    try:
        serve(host=args.host, port=args.port, token=args.token, root=args.root, max_upload_mb=args.max_upload_mb,
              device=args.device, cancel_grace_s=args.cancel_grace, log_level=args.log_level)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radiantforge.service", description="Run the Radiant Forge backend service.")
    add_serve_arguments(parser)
    return serve_from_arguments(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
