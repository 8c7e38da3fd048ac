"""`edgevid devices list` / `edgevid devices detect`: the device profiles, and which one this machine is."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `devices` and its sub-verbs."""
    p = sub.add_parser("devices", help="device profiles (Jetson, x86) and detection of this machine",
                       description="Device profiles: what each edge target runs (backends, precisions, TensorRT, "
                       "JetPack, DLA), with the source of every fact; `export --device` and `deploy` use them.")
    dsub = p.add_subparsers(dest="devices_command", metavar="SUBCOMMAND", required=True)
    lp = dsub.add_parser("list", help="every device profile, supported or not (and why not)")
    lp.add_argument("--json", action="store_true", help="print the full profiles as JSON, sources included")
    lp.add_argument("-q", "--quiet", action="store_true", help="print only the profile names")
    lp.set_defaults(func=run_list)
    dp = dsub.add_parser("detect", help="which profile this machine is (Jetson files, GPU, CPU flags)")
    dp.add_argument("--json", action="store_true", help="print what was found as JSON")
    dp.add_argument("-q", "--quiet", action="store_true", help="print only the profile name")
    dp.add_argument("--root", default="/", help=argparse.SUPPRESS)  # tests: a Jetson's files in a temp folder
    dp.set_defaults(func=run_detect)


def run_list(args: argparse.Namespace) -> int:
    """Print the profiles."""
    from edgevid.devices.profiles import load_profiles

    profiles = load_profiles()
    if args.json:
        print(json.dumps([p.to_dict() for p in profiles], indent=2))
        return 0
    if args.quiet:
        print("\n".join(p.name for p in profiles))
        return 0
    rows = [("name", "supported", "backend", "precisions", "TensorRT", "JetPack", "DLA", "opset", "description")]
    for p in profiles:
        rows.append((p.name, "yes" if p.supported else "no", p.default_backend, ",".join(p.precisions),
                     ",".join(p.tensorrt) or "-", _span(p.jetpack), str(p.dla_cores) if p.jetson else "-",
                     f"<={p.max_opset}", p.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1])
    for p in profiles:
        if not p.supported:
            print(f"\n{p.name}: not supported: {p.unsupported_reason}")
    return 0


def _span(versions: tuple[str, ...]) -> str:
    """``4.6-4.6.6`` for a run of releases, ``-`` for none."""
    if not versions:
        return "-"
    return versions[0] if len(versions) == 1 else f"{versions[0]}-{versions[-1]}"


def run_detect(args: argparse.Namespace) -> int:
    """Print the profile of this machine and the evidence; exit 1 if none fits."""
    from edgevid.devices.detect import detect

    found = detect(args.root)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
    elif args.quiet:
        if found.profile:
            print(found.profile)
    else:
        print(f"profile: {found.profile or 'none'}" + (f" ({found.reason})" if found.reason else ""))
        for line in found.evidence:
            print(f"  {line}")
    if found.profile is None and not args.json:
        print(f"edgevid devices: no profile fits this machine: {found.reason}", file=sys.stderr)
    return 0 if found.profile else 1
