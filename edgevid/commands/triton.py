"""`edgevid triton write` / `edgevid triton serve`: a Triton model repository for a stream artifact, and a local server."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from edgevid.commands import argtypes
from edgevid.export.triton import MAX_BATCH, MAX_INSTANCES  # light: no heavy imports there


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `triton` and its sub-verbs."""
    p = sub.add_parser("triton", help="Triton Inference Server: a model repository for many camera streams",
                       description="Serve a stream artifact from NVIDIA Triton Inference Server, one sequence per "
                       "camera: `write` makes the model repository (production: onnxruntime/tensorrt backend with "
                       "implicit state; portable: the Python backend running edgevid.runtime), `serve` runs a local "
                       "CPU server on it. Clients: edgevid run --triton URL --model NAME, or tritonclient.")
    tsub = p.add_subparsers(dest="triton_command", metavar="SUBCOMMAND", required=True)
    w = tsub.add_parser("write", help="write (or add) a model to a Triton repository folder")
    w.add_argument("artifact", metavar="ARTIFACT", help="a stream-mode artifact directory")
    w.add_argument("-o", "--output", required=True, metavar="REPO", help="the model repository folder")
    w.add_argument("--flavour", choices=("portable", "production"), default="portable",
                   help="portable (default): Python backend + edgevid.runtime, any machine; production: Triton's "
                   "onnxruntime or tensorrt backend with implicit state (GPU servers, NGC container)")
    w.add_argument("--backend", help="portable: onnxruntime (default) or openvino; production: onnxruntime "
                   "(default) or tensorrt")
    w.add_argument("--tensorrt-ep", action="store_true",
                   help="production onnxruntime: run through ONNX Runtime's TensorRT execution provider (FP16)")
    w.add_argument("--name", help="model name in the repository (default: the artifact's model)")
    w.add_argument("--max-batch", type=argtypes.int_range(1, MAX_BATCH), default=8, metavar="N",
                   help="sequences batched per execution (the sequence batcher's slots; default 8)")
    w.add_argument("--instances", type=argtypes.int_range(1, MAX_INSTANCES), default=1, metavar="N",
                   help="model instances (default 1)")
    w.add_argument("--max-idle", type=argtypes.seconds, default=60.0, metavar="S",
                   help="seconds a sequence may go without a request before its state is released (default 60)")
    w.add_argument("--force", action="store_true", help="replace a model of that name that edgevid wrote")
    w.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    w.add_argument("--json", action="store_true", help="print what was written as JSON")
    w.set_defaults(func=run_write)
    s = tsub.add_parser("serve", help="run a local CPU Triton server on a repository (from the nvidia-pytriton wheel)")
    s.add_argument("repository", metavar="REPO", help="the model repository folder")
    s.add_argument("--seconds", type=argtypes.seconds, metavar="S", help="stop after S seconds (default: run until Ctrl-C)")
    s.add_argument("-q", "--quiet", action="store_true", help="print only the URLs")
    s.add_argument("--json", action="store_true", help="print the URLs as JSON")
    s.set_defaults(func=run_serve)


def run_write(args: argparse.Namespace) -> int:
    """Write the repository model."""
    from edgevid.export.triton import write_repository

    info = write_repository(args.artifact, args.output, flavour=args.flavour, backend=args.backend, name=args.name,
                            max_batch=args.max_batch, instances=args.instances, max_idle_s=args.max_idle,
                            tensorrt_ep=args.tensorrt_ep, force=args.force)
    if args.json:
        print(json.dumps(info, indent=2))
    elif not args.quiet:
        print(f"wrote model {info['model']!r} ({info['flavour']}, {info['backend']}) into {args.output}; "
              f"see {info['readme']}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C, SIGTERM or --seconds; a server that fails or dies is one line (its log is kept)."""
    from edgevid.export.triton_server import LocalServer
    from edgevid.signals import exit_on

    server = LocalServer(args.repository)
    try:
        # SIGTERM / SIGHUP: stop the server (later ones ignored meanwhile), exit 128 + signal.
        with exit_on((signal.SIGTERM, signal.SIGHUP), later=signal.SIG_IGN), server:
            urls = {"grpc": server.grpc_url, "http": server.http_url, "pid": server.server_pid}
            if args.json:
                print(json.dumps(urls), flush=True)
            else:
                print(f"grpc {server.grpc_url}  http {server.http_url}  (pid {server.server_pid})", flush=True)
                if not args.quiet:
                    print("Ctrl-C stops the server", file=sys.stderr, flush=True)
            server.wait(args.seconds)
    except KeyboardInterrupt:
        pass
    return 0
