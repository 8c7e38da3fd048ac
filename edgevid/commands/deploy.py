"""`edgevid deploy`: export a model for a device profile into a bundle to copy there and run without torch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgevid.commands.argtypes import side
from edgevid.commands.weights_option import add_weights_option, checkpoint_of


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `deploy`."""
    p = sub.add_parser(
        "deploy", help="a self-contained bundle for a device (artifact, runtime wheel, requirements, README)",
        description="Export a zoo model for a device profile (see `edgevid devices list`) into a folder to copy to "
        "the device: the validated artifact, edgevid's runtime as a wheel, requirements.txt for that device "
        "(runtime only, no torch), and a README with the commands to run it on a video or camera, to benchmark "
        "it, and the power-mode notes. On the device, from the folder holding DIR: pip install -r "
        "DIR/requirements.txt, then edgevid run DIR (DIR/README.md has every step).",
    )
    p.add_argument("--model", required=True, help="zoo model name or alias (see `edgevid zoo list`)")
    p.add_argument("--device", required=True, metavar="PROFILE", help="device profile, e.g. orin-nano, x86-cpu")
    p.add_argument("--checkpoint", metavar="PATH", help="weights (default: the checkpoint shipped with the model)")
    add_weights_option(p)
    p.add_argument("--mode", choices=("clip", "stream"), help="default: stream if the model can stream")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), help="default: the device profile's")
    p.add_argument("--size", type=side, metavar="S", help="input crop size in pixels (default: the model's)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="bundle folder to create")
    p.add_argument("--force", action="store_true", help="replace DIR if it holds an earlier bundle")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print bundle.json on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Deploy and print what the bundle holds."""
    from edgevid.commands import warnings_as_lines
    from edgevid.deploy import deploy

    with warnings_as_lines("deploy"):
        info = deploy(args.model, args.device, args.output, checkpoint=checkpoint_of(args, None, not args.quiet),
                      precision=args.precision,
                      mode=args.mode, size=args.size, force=args.force, progress=not args.quiet)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    art = info["artifacts"][0]
    name = Path(args.output).name
    print(f"bundle for {info['device']} in {args.output}: {art['path']}/ ({art['mode']}, {art['precision']}, "
          f"{art['target']}), {info['wheel']}, requirements.txt, README.md, SHA256SUMS")
    print(f"on the device, from the folder holding {name}/ (every step: {name}/README.md): "
          f"(cd {name} && sha256sum -c SHA256SUMS) && pip install -r {name}/requirements.txt && edgevid run {name} "
          "--video clip.mp4")
    return 0
