"""A small JSON Schema validator for the keywords ``protocol/schemas`` uses.

The package's only runtime dependencies are redis and httpx, so instead of
``jsonschema`` this module checks: ``type`` (one name or a list, ``null``
included), ``required``, ``properties``, ``minLength``, ``maxLength``,
``pattern``, ``minimum``, ``maximum``, ``enum``. A schema that uses any other
validation keyword is refused when loaded (``SchemaError``), so a new keyword
in ``protocol/`` can never be silently ignored. The test suite checks that it
agrees with ``jsonschema`` on valid and invalid samples.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

#: Keywords that only describe, never constrain.
_ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "default", "examples"}
#: Keywords this validator enforces.
SUPPORTED = {"type", "required", "properties", "minLength", "maxLength", "pattern", "minimum", "maximum", "enum"}


class SchemaError(Exception):
    """A schema uses a keyword this validator does not implement, or is malformed."""


def check_schema(schema: Any, where: str = "#") -> None:
    """Raise ``SchemaError`` unless every keyword in ``schema`` is supported."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: a schema must be an object")
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key not in SUPPORTED:
            raise SchemaError(f"{where}: unsupported keyword {key!r}")
        if key == "properties":
            for name, sub in value.items():
                check_schema(sub, f"{where}/properties/{name}")
        if key == "pattern":
            re.compile(value)


def _type_ok(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    raise SchemaError(f"unknown type {name!r}")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def iter_errors(schema: dict, value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(field, problem)`` for every way ``value`` breaks ``schema``."""
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, t) for t in types):
            yield (path or "(root)", f"expected {' or '.join(types)}, got {_type_name(value)}")
            return  # the other keywords would only repeat the same problem
    if "enum" in schema and not any(value == e and _type_name(value) == _type_name(e) for e in schema["enum"]):
        yield (path or "(root)", f"expected one of {schema['enum']!r}, got {value!r}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            what = "must not be empty" if schema["minLength"] == 1 else f"shorter than {schema['minLength']} characters"
            yield (path or "(root)", what)
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield (path or "(root)", f"longer than {schema['maxLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            yield (path or "(root)", f"{value!r} does not match {schema['pattern']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            yield (path or "(root)", f"{value!r} is less than {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            yield (path or "(root)", f"{value!r} is more than {schema['maximum']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                yield (_join(path, name), "required field is missing")
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                yield from iter_errors(sub, value[name], _join(path, name))


class SchemaSet:
    """The envelope schema plus one payload schema per event_type, loaded from a directory."""

    def __init__(self, envelope: dict, payloads: dict[str, dict]):
        check_schema(envelope, "envelope.json")
        for event_type, schema in payloads.items():
            check_schema(schema, f"{event_type}.json")
        self.envelope = envelope
        self.payloads = payloads

    @classmethod
    def from_directory(cls, directory: str | Path) -> "SchemaSet":
        """Load ``envelope.json`` and every other ``<event_type>.json`` of ``directory``."""
        directory = Path(directory)
        envelope = json.loads((directory / "envelope.json").read_text(encoding="utf-8"))
        payloads = {
            p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(directory.glob("*.json"))
            if p.name != "envelope.json"
        }
        return cls(envelope, payloads)

    @classmethod
    def packaged(cls) -> "SchemaSet":
        """The copies shipped inside this package (equal to the repository's ``protocol/schemas``)."""
        root = resources.files("signalr_sidecar_publisher") / "schemas"
        envelope = json.loads((root / "envelope.json").read_text(encoding="utf-8"))
        payloads = {}
        for entry in sorted(root.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".json") and entry.name != "envelope.json":
                payloads[entry.name[: -len(".json")]] = json.loads(entry.read_text(encoding="utf-8"))
        return cls(envelope, payloads)

    def errors(self, envelope: Any) -> list[tuple[str, str]]:
        """Every problem of an envelope (as a dict): its shape, then its payload when a
        schema exists for its event_type. Fields are dotted paths (``payload.content``)."""
        found = list(iter_errors(self.envelope, envelope))
        if isinstance(envelope, dict) and isinstance(envelope.get("payload"), dict):
            schema = self.payloads.get(envelope.get("event_type"))  # type: ignore[arg-type]
            if schema is not None:
                found.extend(iter_errors(schema, envelope["payload"], "payload"))
        return found


_packaged: SchemaSet | None = None


def packaged_schemas() -> SchemaSet:
    """The shipped schemas, loaded once."""
    global _packaged
    if _packaged is None:
        _packaged = SchemaSet.packaged()
    return _packaged
