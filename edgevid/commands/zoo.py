"""`edgevid zoo list`: the model zoo as a table or JSON; `edgevid zoo fetch`: download public weights ahead."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgevid.commands import argtypes


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `zoo` and its sub-verbs."""
    p = sub.add_parser("zoo", help="list the model zoo", description="Browse the built-in model zoo.")
    zsub = p.add_subparsers(dest="zoo_command", metavar="SUBCOMMAND", required=True)
    lp = zsub.add_parser("list", help="print every zoo entry (name, family, frames, size, streaming, weights)")
    lp.add_argument("--json", action="store_true", help="print the full configs as JSON (with the measured cost)")
    lp.add_argument("-q", "--quiet", action="store_true", help="print only the model names, one per line")
    lp.set_defaults(func=run_list)
    fp = zsub.add_parser(
        "fetch", help="download a model's public weights into the cache now (for a machine without internet)",
        description="Download the public checkpoint --weights W of a zoo model from its source (torchvision, "
        "PyTorchVideo, MMAction2, the TSM authors) into the weights cache, verified against the source's hash, "
        "and print its path. Later --weights W finds it there without a network; -o DIR also puts a copy in DIR, "
        "under the source's file name (the name --weights FILE recognises it by: labels and provenance). "
        "EDGEVID_WEIGHTS_MIRROR=URL fetches from a mirror laid out as URL/<host>/<path>.")
    fp.add_argument("model", metavar="MODEL", help="zoo model name or alias")
    fp.add_argument("--weights", metavar="NAME", help="which weights (default: the model's only public ones)")
    fp.add_argument("-o", "--output", metavar="DIR",
                    help="also copy the file into DIR (created if missing); a different file of that name is refused")
    fp.add_argument("--timeout", type=argtypes.seconds, metavar="S",
                    help="give up after S seconds without data from the server (default: 30)")
    fp.add_argument("-q", "--quiet", action="store_true", help="no progress bar; print only the path")
    fp.add_argument("--json", action="store_true", help="print what was fetched (path, url, sha256, source's figures)")
    fp.set_defaults(func=run_fetch)


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
    # The cost of the model `edgevid export --model NAME` builds: the shipped weights' architecture
    # where the entry ships weights (tsm: 112 px, width 0.5, 11 classes), else the zoo default's.
    costs = {c.name: _cost(c.name, **(_shipped_arch(c) or {})) for c in configs}
    if args.json:
        print(json.dumps([_config_json(c) | {"aliases": alias_of.get(c.name, []), "cost": _without_timing(costs[c.name]),
                                             "stream_output": _timing(costs[c.name]),
                                             "cost_of": _shipped_arch(c) or _arch(c), "shipped_arch": _shipped_arch(c)}
                          for c in configs], indent=2))
        return 0
    rows = [("name", "family", "backbone", "shift", "frames", "size", "stream", "params", "GMACs/clip",
             "GMACs/frame", "outputs", "weights")]
    notes = []
    for c in configs:
        name = c.name + (f" ({', '.join(alias_of[c.name])})" if c.name in alias_of else "")
        shipped = c.default_weights
        weights = f"{shipped.name} ({_arch_text(_shipped_arch(c) or {})})" if shipped else "-"
        public = [f"{w.name} ({w.source})" for w in c.weights if w.url]
        if public:
            weights = ", ".join(([weights] if shipped else []) + public)
        cost = costs[c.name] or {}
        mark, size, frames = "", str(c.input_size), str(c.frames)
        if _shipped_arch(c) not in (None, _arch(c)):
            # Export, eval and deploy build the shipped weights' model by default: the row shows
            # that model; the zoo default (what training from scratch builds) goes in a note.
            mark, size, frames = "*", str(shipped.input_size), str(shipped.frames)
            default = _cost(c.name)
            cost_text = (f": {default['params'] / 1e6:.1f}M params, {default['gmacs_per_clip']:.2f} GMACs/clip"
                         if default else "")
            notes.append(f"* {c.name}: the model its shipped {shipped.name} weights build ({_arch_text(_shipped_arch(c))}), "
                         f"what export uses without --checkpoint; the zoo default, which train builds from scratch, "
                         f"is {_arch_text(_arch(c))}{cost_text}")
        rows.append((name, c.family, c.backbone, c.shift, frames, size,
                     "yes" if c.can_stream else "no", f"{cost['params'] / 1e6:.1f}M{mark}" if cost else "-",
                     f"{cost['gmacs_per_clip']:.2f}{mark}" if cost else "-",
                     f"{cost['gmacs_per_frame']:.2f}{mark}" if cost.get("gmacs_per_frame") else "-",
                     _outputs_text(cost), weights))
    _print_table(rows)
    if any(c.get("output_every", 1) > 1 for c in costs.values() if c):
        print("outputs: when a stream answers. 'every 8 from 8': a time-strided network makes a new output on steps "
              "8, 16, 24, ... (each stride's last frame) and holds it in between; nothing before step 8")
    if not any(costs.values()):
        print("(params and GMACs are measured with torch: pip install 'edgevid[export]')")
    elif notes:
        print("\n".join(notes))
    _print_public(configs)
    return 0


_ARCH_FIELDS = ("input_size", "frames", "width_mult", "num_classes")  # what a checkpoint may set (edgevid.models)


def _timing(cost: dict[str, Any] | None) -> dict[str, int] | None:
    """``{"every": P, "first": F}`` (steps) of a streaming entry, else None."""
    if not cost or "output_every" not in cost:
        return None
    return {"every": cost["output_every"], "first": cost["first_output"]}


def _without_timing(cost: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if cost is None else {k: v for k, v in cost.items() if k not in ("output_every", "first_output")}


def _outputs_text(cost: dict[str, Any]) -> str:
    """When a stream answers: "every step", or "every P from F" for a time-strided network."""
    if "output_every" not in cost:
        return "-"
    every, first = cost["output_every"], cost["first_output"]
    return "every step" if every == 1 else f"every {every} from {first}"


def _arch(spec: Any) -> dict[str, Any]:
    """The architecture fields of a zoo config or a checkpoint spec: the model the cost is of."""
    return {field: getattr(spec, field) for field in _ARCH_FIELDS}


def _shipped_arch(config: Any) -> dict[str, Any] | None:
    """The architecture the shipped checkpoint builds (None: the entry ships none)."""
    shipped = config.default_weights
    return None if shipped is None else _arch(shipped)


def _arch_text(arch: dict[str, Any]) -> str:
    width = f", width {arch['width_mult']:g}" if arch["width_mult"] != 1.0 else ""
    return f"{arch['input_size']}px, {arch['frames']} frames{width}, {arch['num_classes']} classes"


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _hash_column(spec: Any) -> str:
    if spec.sha256:
        return f"sha256 {spec.sha256[:12]}..."
    if spec.hash_prefix:
        return f"sha256 {spec.hash_prefix}..."
    return "none published (pinned at first download)"


def _print_public(configs: list) -> None:
    """The public weights of every entry: source, the source's figures (a citation), how the file is checked."""
    from edgevid.models.hub import weights_cache

    rows = [("model", "weights", "source", "dataset", "top-1", "top-5", "views", "hash")]
    for c in configs:
        for w in c.weights:
            if w.url:
                pub = dict(w.published)
                rows.append((c.name, w.name, w.source, str(pub.get("dataset", w.dataset)), _figure(pub.get("top1")),
                             _figure(pub.get("top5")), str(pub.get("views", "-")), _hash_column(w)))
    if len(rows) == 1:
        return
    print(f"\npublic weights (`--weights NAME` on export, eval, train, report, deploy; downloaded once into "
          f"{weights_cache()}; top-1 / top-5 as each source publishes them, not measured by edgevid):")
    _print_table(rows)


def _figure(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def _config_json(config: Any) -> dict[str, Any]:
    """``config.to_dict()`` with each public checkpoint's figures as a mapping, its hash check and cache path."""
    from edgevid.models.hub import cached_path, hash_policy, published_hash

    data = config.to_dict()
    for entry, spec in zip(data["weights"], config.weights):
        entry["published"] = dict(spec.published)
        if spec.url:
            path = cached_path(spec)
            entry |= {"hash_published": published_hash(spec) or None, "hash_check": hash_policy(spec),
                      "cache_path": str(path), "cached": path.is_file(), "labels": spec.labels_name or "in the spec"}
    return data


def run_fetch(args: argparse.Namespace) -> int:
    """Download (or find in the cache) one public checkpoint, optionally copy it into a folder; print its path."""
    from edgevid.commands import warnings_as_lines
    from edgevid.errors import EdgevidError
    from edgevid.models.hub import DEFAULT_TIMEOUT, fetch, find_weights, labels_of, public_weights, verify
    from edgevid.models.registry import get_config

    config = get_config(args.model)
    public = public_weights(config)
    if args.weights is None:
        if len(public) != 1:
            names = ", ".join(w.name for w in public)
            raise EdgevidError(f"{config.name} has no public weights" if not public
                               else f"{config.name} has {len(public)} public weights ({names}): choose one with --weights")
        spec = public[0]
    else:
        spec = find_weights(config, args.weights)
        if not spec.url:
            raise EdgevidError(f"{config.name}'s {spec.name} weights ship with edgevid: nothing to download")
    target = None
    if args.output is not None:
        target = _copy_target(Path(args.output), spec.file)  # refuse a foreign file before downloading
    with warnings_as_lines("zoo"):
        path = fetch(spec, progress=not args.quiet, timeout=args.timeout or DEFAULT_TIMEOUT)
    verified = verify(spec, path)
    if target is not None:
        _copy(path, target, verified.sha256)
        path = target
    if args.json:
        print(json.dumps({"model": config.name, "weights": spec.name, "source": spec.source, "url": spec.url,
                          "path": str(path.absolute()), "sha256": verified.sha256, "hash_check": verified.check,
                          "published": dict(spec.published), "labels": len(labels_of(spec))}, indent=2))
        return 0
    if not args.quiet:
        print(f"{config.name} {spec.name} ({spec.source}, {verified.check}): use it with --weights {spec.name}, "
              f"or --weights {path} elsewhere", file=sys.stderr)
    print(path.absolute())
    return 0


def _copy_target(folder: Path, name: str) -> Path:
    """``folder/name``, checked writable now; an existing file there must be this checkpoint (checked later)."""
    from edgevid.errors import EdgevidError
    from edgevid.manifest import check_writable

    if folder.exists() and not folder.is_dir():
        raise EdgevidError(f"-o {folder} is not a folder: -o names the folder the checkpoint is copied into")
    target = folder / name
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise EdgevidError(f"{target} exists and is not a plain file: refused")
    check_writable(target)
    return target


def _copy(source: Path, target: Path, sha256: str) -> None:
    """Copy the verified file to ``target`` atomically; an existing ``target`` must be the same bytes."""
    import shutil

    from edgevid.errors import EdgevidError
    from edgevid.manifest import atomic_writer
    from edgevid.models.hub import sha256_of

    if target.is_file():
        if sha256_of(target) == sha256:
            return  # already there: nothing to do
        raise EdgevidError(f"{target} exists and is not this checkpoint (another sha256): remove it or choose "
                           "another -o folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(target) as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)


def _cost(name: str, **overrides: Any) -> dict | None:
    """The entry's measured cost (with config ``overrides``), or None where torch is not installed
    (a runtime-only device)."""
    try:
        from edgevid.models.cost import measure
    except ImportError:
        return None
    try:
        return measure(name, **overrides)
    except ImportError:
        return None
