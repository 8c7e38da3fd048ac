"""`edgevid zoo list`: the model zoo as a table or JSON."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `zoo` and its sub-verbs."""
    p = sub.add_parser("zoo", help="list the model zoo", description="Browse the built-in model zoo.")
    zsub = p.add_subparsers(dest="zoo_command", metavar="SUBCOMMAND", required=True)
    lp = zsub.add_parser("list", help="print every zoo entry (name, family, frames, size, streaming, weights)")
    lp.add_argument("--json", action="store_true", help="print the full configs as JSON (with the measured cost)")
    lp.add_argument("-q", "--quiet", action="store_true", help="print only the model names, one per line")
    lp.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    """Print the zoo."""
    from edgevid.models.registry import aliases, list_models

    configs = list_models()
    alias_of: dict[str, list[str]] = {}
    for alias, name in aliases().items():
        alias_of.setdefault(name, []).append(alias)
    if args.quiet:
        print("\n".join(c.name for c in configs))
        return 0
    costs = {c.name: _cost(c.name) for c in configs}
    if args.json:
        print(json.dumps([c.to_dict() | {"aliases": alias_of.get(c.name, []), "cost": costs[c.name]}
                          for c in configs], indent=2))
        return 0
    rows = [("name", "family", "backbone", "shift", "frames", "size", "stream", "params", "GMACs/clip",
             "GMACs/frame", "weights")]
    for c in configs:
        name = c.name + (f" ({', '.join(alias_of[c.name])})" if c.name in alias_of else "")
        shipped = c.default_weights
        weights = f"{shipped.name} ({shipped.input_size}px, {shipped.num_classes} classes)" if shipped else "-"
        cost = costs[c.name] or {}
        rows.append((name, c.family, c.backbone, c.shift, str(c.frames), str(c.input_size),
                     "yes" if c.can_stream else "no", f"{cost['params'] / 1e6:.1f}M" if cost else "-",
                     f"{cost['gmacs_per_clip']:.2f}" if cost else "-",
                     f"{cost['gmacs_per_frame']:.2f}" if cost.get("gmacs_per_frame") else "-", weights))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    if not any(costs.values()):
        print("(params and GMACs are measured with torch: pip install 'edgevid[export]')")
    return 0


def _cost(name: str) -> dict | None:
    """The entry's measured cost, or None where torch is not installed (a runtime-only device)."""
    try:
        from edgevid.models.cost import measure
    except ImportError:
        return None
    try:
        return measure(name)
    except ImportError:
        return None
