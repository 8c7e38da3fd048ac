"""The versioned JSON schemas of ``bench --json`` and report.json (package data next to this file)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMAS = {"bench": "bench.schema.json", "report": "report.schema.json"}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema ``"bench"`` or ``"report"``."""
    return json.loads(resources.files("edgevid.report").joinpath(SCHEMAS[name]).read_text(encoding="utf-8"))


def validate(instance: Any, name: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` matches schema ``name``.

    Needs the ``jsonschema`` package (the ``dev`` extra); the report schema refers to the
    bench schema's definitions by its ``$id``.
    """
    import jsonschema
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (load_schema(n)["$id"], Resource.from_contents(load_schema(n))) for n in SCHEMAS)
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER).validate(instance)
