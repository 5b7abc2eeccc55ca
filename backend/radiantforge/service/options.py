"""The settings of ``radiantforge serve`` and their defaults, importable without the web framework
(the ``radiantforge`` command line builds its parser from them on every call)."""

from __future__ import annotations

import argparse
import sys

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# Read when no token is passed, so that the token need not appear in the process list.
TOKEN_ENV = "RADIANTFORGE_TOKEN"
DEFAULT_MAX_UPLOAD_MB = 2048
# What an archive may unpack to on disk, in all and per file. Job data is mostly PNG and JPEG
# images, which do not deflate, so the unpacked size of a real dataset is about its upload size;
# per entry, archive.MAX_COMPRESSION_RATIO refuses bombs before anything is written.
DEFAULT_MAX_UNPACKED_MB = 4096
DEFAULT_MAX_FILE_MB = 1024
DEFAULT_CANCEL_GRACE_S = 30.0  # time a worker gets to checkpoint and stop before it is killed
# Time the running job gets to checkpoint when the service stops: one step of the slowest job
# (an SDS step of Stable Diffusion on a CPU takes seconds) plus writing its checkpoint.
DEFAULT_STOP_GRACE_S = 30.0


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``serve`` (shared with the ``radiantforge serve`` subcommand)."""
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}; anything beyond loopback needs --token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one, see ROOT/service.json)")
    parser.add_argument("--token", default=None, help=f"require 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV})")
    parser.add_argument("--root", default=None, help="folder for jobs and results (default: the per-user data folder)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, help=f"largest job archive accepted (default {DEFAULT_MAX_UPLOAD_MB})")
    parser.add_argument("--max-unpacked-mb", type=float, default=DEFAULT_MAX_UNPACKED_MB, help=f"most an archive may unpack to on disk (default {DEFAULT_MAX_UNPACKED_MB})")
    parser.add_argument("--max-file-mb", type=float, default=DEFAULT_MAX_FILE_MB, help=f"most one file of an archive may unpack to (default {DEFAULT_MAX_FILE_MB})")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="a Host name requests may use besides loopback ones (repeatable; the name or address a remote service is reached by; '*' for any, only with --token)")
    parser.add_argument("--model-dir", action="append", default=[], metavar="DIR", help="a folder of Stable Diffusion model folders that jobs may name (repeatable; Hugging Face ids in the cache always work)")
    parser.add_argument("--device", default=None, help="run every job on this device (auto, cpu, cuda, mps; default: the job's own setting)")
    parser.add_argument("--cancel-grace", type=float, default=DEFAULT_CANCEL_GRACE_S, help="seconds a cancelled job gets to checkpoint before it is killed")
    parser.add_argument("--stop-grace", type=float, default=DEFAULT_STOP_GRACE_S, help="on Ctrl+C or SIGTERM, seconds the running job gets to checkpoint (it resumes at the next start) before it is killed")
    parser.add_argument("--ray", default=None, metavar="auto|ADDRESS", help="run submitted jobs as Ray tasks on a cluster "
                        "(auto: this machine's, started if none runs; or head:6379, with RAY_AUTH_MODE=token and the head's "
                        "token for a `ray start` head), as many at once as it fits, "
                        "instead of one local worker at a time; the job API is the same. Needs pip install "
                        "\"radiantforge[ray]\" and a SHARED DISK: every Ray node must see --root (and any job folder "
                        "submitted by path) at the same path")
    parser.add_argument("--ray-cpus-per-job", type=int, default=1, metavar="N", help="with --ray on a cluster without "
                        "GPUs, the CPUs each job takes (default 1; with GPUs each job takes one GPU)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def serve_from_arguments(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from .server import serve

    try:
        serve(host=args.host, port=args.port, token=args.token, root=args.root, max_upload_mb=args.max_upload_mb,
              device=args.device, cancel_grace_s=args.cancel_grace, log_level=args.log_level,
              max_unpacked_mb=args.max_unpacked_mb, max_file_mb=args.max_file_mb, allowed_hosts=args.allow_host,
              model_dirs=args.model_dir, stop_grace_s=args.stop_grace, ray_address=args.ray,
              ray_cpus_per_job=args.ray_cpus_per_job)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
