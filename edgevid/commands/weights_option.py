"""``--weights NAME|FILE``, shared by the verbs that load a model (export, eval, train, report, deploy).

``--weights NAME`` is one of the entry's weights as ``edgevid zoo list`` names them (``kinetics400``,
``sthv2``, ``synth``...): a public checkpoint is downloaded once into the cache, verified against
its source's hash, and brings its labels and provenance. ``--weights FILE`` is a local checkpoint,
the same as ``--checkpoint FILE`` (an existing file wins over a name). Giving both options is
refused: they say the same thing, and two answers to it would be a guess.
"""

from __future__ import annotations

import argparse
import os

HELP = ("weights by name, as `edgevid zoo list` shows them (e.g. kinetics400: downloaded once into the cache and "
        "checked against the source's hash, labels included), or a checkpoint FILE (same as --checkpoint FILE)")


def add_weights_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--weights NAME|FILE`` (beside the verb's ``--checkpoint``)."""
    parser.add_argument("--weights", metavar="NAME|FILE", help=HELP)


def checkpoint_of(args: argparse.Namespace, default: str | None, progress: bool = True) -> str | None:
    """What the verb loads: ``--checkpoint``, or ``--weights`` resolved to a file (downloading a
    public checkpoint now, before any heavy work), else ``default``."""
    from edgevid.errors import EdgevidError

    weights, checkpoint = getattr(args, "weights", None), getattr(args, "checkpoint", None)
    if weights is not None and checkpoint is not None:
        raise EdgevidError("give --weights or --checkpoint, not both (--weights FILE is --checkpoint FILE)")
    if weights is None:
        return checkpoint if checkpoint is not None else default
    if os.path.isfile(weights):
        return weights
    from edgevid.models import DEFAULT_CHECKPOINT, get_config
    from edgevid.models.hub import fetch, find_weights

    config = get_config(args.model)
    spec = find_weights(config, weights, note=" (and there is no file of that name)")
    if spec.url:
        from edgevid.commands import warnings_as_lines

        with warnings_as_lines(getattr(args, "command", None) or "weights"):  # a damaged cached file: one line
            return str(fetch(spec, progress=progress))
    return DEFAULT_CHECKPOINT if spec == config.default_weights else str(spec.path)
