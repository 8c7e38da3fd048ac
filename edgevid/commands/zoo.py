"""`edgevid zoo list`: the model zoo as a table or JSON."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `zoo` and its sub-verbs."""
    p = sub.add_parser("zoo", help="list the model zoo", description="Browse the built-in model zoo.")
    zsub = p.add_subparsers(dest="zoo_command", metavar="SUBCOMMAND", required=True)
    lp = zsub.add_parser("list", help="print every zoo entry (name, family, frames, size, streaming, weights)")
    lp.add_argument("--json", action="store_true", help="print the full configs as JSON")
    lp.add_argument("-q", "--quiet", action="store_true", help="print only the model names, one per line")
    lp.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    """Print the zoo."""
    from edgevid.models.registry import aliases, list_models

    configs = list_models()
    alias_of: dict[str, list[str]] = {}
    for alias, name in aliases().items():
        alias_of.setdefault(name, []).append(alias)
    if args.json:
        print(json.dumps([c.to_dict() | {"aliases": alias_of.get(c.name, [])} for c in configs], indent=2))
        return 0
    if args.quiet:
        print("\n".join(c.name for c in configs))
        return 0
    rows = [("name", "family", "backbone", "shift", "frames", "size", "stream", "weights")]
    for c in configs:
        name = c.name + (f" ({', '.join(alias_of[c.name])})" if c.name in alias_of else "")
        shipped = c.default_weights
        weights = f"{shipped.name} ({shipped.input_size}px, {shipped.num_classes} classes)" if shipped else "-"
        rows.append((name, c.family, c.backbone, c.shift, str(c.frames), str(c.input_size),
                     "yes" if c.can_stream else "no", weights))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0
