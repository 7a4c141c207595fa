"""Validate custom resources against a CRD the way the Kubernetes API server does.

No API server runs in the unit tests, so this module emulates the parts of
admission that the ImageJob CRD relies on, in the server's order:

1. apiVersion/kind must match a served version; metadata.name is required.
2. Unknown fields are refused (kubectl's default `--validate=strict`), null
   values of non-nullable fields are pruned, then `default`s are filled in.
3. The structural schema is checked with `jsonschema` (draft 4, the dialect
   Kubernetes' OpenAPI v3 subset follows) with three corrections: `nullable`,
   RE2 `$` semantics and `format: date-time`.
4. `x-kubernetes-list-type: map` keys must be unique.
5. Our own CEL rules (`x-kubernetes-validations`) run through a tiny table of
   Python equivalents; an unknown rule raises so nobody adds one untested.

Messages imitate the API server's (`spec.width in body should be a multiple of
8`, `unknown field "spec.widht"`), so `# expect:` lines in examples/invalid
read like what `kubectl apply` prints. The module also checks a schema for
structural-schema, RE2 and CEL-cost problems.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from comfykube.types import ONE_SOURCE_RULE

__all__ = [
    "CRValidationError",
    "cel_cost_problems",
    "cr_errors",
    "pattern_problems",
    "served_schema",
    "structural_problems",
    "validate_cr",
]

#: Python equivalents of the CEL rules our CRD uses: (self, oldSelf) -> ok.
#: Transition rules (those naming oldSelf) only run on update, as on the server.
CEL_RULES: dict[str, Callable[[Any, Any], bool]] = {
    "self == oldSelf": lambda self, old: self == old,
    # CEL `matches` is an RE2 search (not anchored); RE2's \S is ASCII: not one of [\t\n\f\r ].
    r"self.matches('\\S')": lambda self, old: re.search(r"[^\t\n\f\r ]", self) is not None,
    ONE_SOURCE_RULE: lambda self, old: sum(key in self for key in ("url", "s3Key", "fromJob")) == 1,
}

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z", flags=re.ASCII)


class CRValidationError(ValueError):
    """The API server would refuse the object; `errors` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


# --- schema helpers --------------------------------------------------------------------------


def served_schema(crd: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """The openAPIV3Schema of `version` (default: the storage version)."""
    for item in crd["spec"]["versions"]:
        if (version is None and item.get("storage")) or item["name"] == version:
            return item["schema"]["openAPIV3Schema"]
    raise KeyError(f"CRD has no version {version!r}")


def _re2_compatible(pattern: str) -> re.Pattern[str]:
    """Compile `pattern` with Go RE2 semantics where Python's differ for our patterns.

    RE2 (no multi-line flag) matches `$` only at the very end; Python's `$` also
    matches before a final newline, which would let `"euler\\n"` through. RE2's
    `\\d`, `\\w`, `\\s` are ASCII-only, hence re.ASCII.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append("\\Z" if char == "$" and not in_class else char)
        i += 1
    return re.compile("".join(out), flags=re.ASCII)


def _pattern_keyword(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _re2_compatible(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    try:
        dt.datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    return True


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("date-time")(_is_date_time)
_Validator = jsonschema.validators.extend(Draft4Validator, {"pattern": _pattern_keyword})


def _to_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """Structural schema → draft-4 JSON schema with the server's semantics."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: _to_jsonschema(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = _to_jsonschema(value)
        else:
            out[key] = copy.deepcopy(value)
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if node.get("type") == "object" and "properties" in node:
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


# --- admission steps ---------------------------------------------------------------------------


def _path(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _prune_and_default(value: Any, node: dict[str, Any], where: list[str | int], errors: list[str]) -> None:
    """Refuse unknown fields, drop nulls the schema does not allow, fill defaults (in place)."""
    if isinstance(value, dict) and node.get("type") == "object":
        props: dict[str, Any] = node.get("properties", {})
        if props and not node.get("x-kubernetes-preserve-unknown-fields"):
            for key in list(value):
                if key not in props:
                    errors.append(f'unknown field "{_path([*where, key])}"')
                    del value[key]
        for key, sub in props.items():
            if key in value and value[key] is None and not sub.get("nullable"):
                del value[key]  # the server prunes such nulls before defaulting
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value and not (where == [] and key == "metadata"):
                _prune_and_default(value[key], sub, [*where, key], errors)
    elif isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            _prune_and_default(item, node["items"], [*where, index], errors)


def _go_type(value: Any) -> str:
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
    return "array" if isinstance(value, list) else "object"


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, dict | list) else f'"{_go_type(value)}"'


def _messages(error: ValidationError) -> list[str]:
    """One jsonschema error → the API server's wording."""
    where = list(error.absolute_path)
    path = _path(where)
    kind, bound, got = error.validator, error.validator_value, error.instance
    head = f"{path}: Invalid value: {_shown(got)}: {path} in body"
    if kind == "required":
        return [f"{_path([*where, name])}: Required value" for name in bound if name not in got]
    if kind == "additionalProperties":
        known = error.schema.get("properties", {})
        return [f'unknown field "{_path([*where, key])}"' for key in got if key not in known]
    if kind == "type":
        wanted = bound[0] if isinstance(bound, list) else bound
        return [f'{path}: Invalid value: "{_go_type(got)}": {path} in body must be of type {wanted}: {_shown(got)}']
    if kind == "enum":
        allowed = ", ".join(json.dumps(item) for item in bound if item is not None)
        return [f"{path}: Unsupported value: {_shown(got)}: supported values: {allowed}"]
    simple = {
        "minimum": f"should be greater than or equal to {bound}",
        "maximum": f"should be less than or equal to {bound}",
        "multipleOf": f"should be a multiple of {bound}",
        "minLength": f"should be at least {bound} chars long",
        "pattern": f"should match '{bound}'",
        "format": f"must be of type {bound}: {_shown(got)}",
    }
    if kind in simple:
        return [f"{head} {simple[kind]}"]
    if kind == "maxLength":
        return [f"{path}: Too long: may not be more than {bound} bytes"]
    if kind == "maxItems":
        return [f"{path}: Too many: {len(got)}: must have at most {bound} items"]
    if kind == "minItems":
        return [f"{path}: Invalid value: {len(got)}: {path} in body should have at least {bound} items"]
    return [f"{path}: Invalid value: {error.message}"]


def _list_maps(value: Any, node: dict[str, Any], where: list[str | int], errors: list[str]) -> None:
    """`x-kubernetes-list-type: map`: one entry per key tuple, as the server enforces."""
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key in value:
                _list_maps(value[key], sub, [*where, key], errors)
    elif isinstance(value, list):
        if node.get("x-kubernetes-list-type") == "map":
            keys = node.get("x-kubernetes-list-map-keys", [])
            seen: set[str] = set()
            for index, item in enumerate(value):
                ident = json.dumps({k: item.get(k) for k in keys} if isinstance(item, dict) else item)
                if ident in seen:
                    errors.append(f"{_path([*where, index])}: Duplicate value: {ident}")
                seen.add(ident)
        for index, item in enumerate(value):
            _list_maps(item, node.get("items", {}), [*where, index], errors)


def _cel(
    value: Any, old: Any, node: dict[str, Any], where: list[str | int], errors: list[str], *, update: bool
) -> None:
    """Run the rules of `node` and below; transition rules only where an old value exists."""
    for rule in node.get("x-kubernetes-validations", []):
        text = rule["rule"]
        if text not in CEL_RULES:
            raise NotImplementedError(f"tests/crd_validation.py cannot evaluate CEL rule {text!r} yet")
        if "oldSelf" in text and not (update and old is not None):
            continue
        if not CEL_RULES[text](value, old):
            message = rule.get("message") or f"failed rule: {text}"
            errors.append(f'{_path(where)}: Invalid value: "{_go_type(value)}": {message}')
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key in value:
                old_sub = old.get(key) if isinstance(old, dict) else None
                _cel(value[key], old_sub, sub, [*where, key], errors, update=update)
    elif isinstance(value, list) and "items" in node:
        # Old list items only correlate for map lists; our rules do not need that yet.
        for index, item in enumerate(value):
            _cel(item, None, node["items"], [*where, index], errors, update=update)


def _admit(crd: dict[str, Any], obj: Any, old: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(obj, dict):
        return {}, ["object must be a mapping"]
    obj = copy.deepcopy(obj)
    errors: list[str] = []
    spec = crd["spec"]
    versions = {f"{spec['group']}/{v['name']}": v for v in spec["versions"] if v.get("served")}
    version = versions.get(obj.get("apiVersion", ""))
    if version is None:
        return obj, [f"no matches for apiVersion {obj.get('apiVersion')!r}: served are {sorted(versions)}"]
    if obj.get("kind") != spec["names"]["kind"]:
        return obj, [f"kind {obj.get('kind')!r} is not {spec['names']['kind']}"]
    metadata = obj.get("metadata") or {}
    name = metadata.get("name")
    if not name and not metadata.get("generateName"):
        errors.append("metadata.name: Required value: name or generateName is required")
    elif name and (len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name)):
        errors.append(f"metadata.name: Invalid value: {json.dumps(name)}: must be a lowercase RFC 1123 subdomain")

    schema = version["schema"]["openAPIV3Schema"]
    _prune_and_default(obj, schema, [], errors)
    validator = _Validator(_to_jsonschema(schema), format_checker=_FORMATS)
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        errors.extend(_messages(error))
    _list_maps(obj, schema, [], errors)
    if not errors:
        old_obj = None
        if old is not None:
            old_obj = copy.deepcopy(old)
            _prune_and_default(old_obj, schema, [], [])  # stored objects are already defaulted
        _cel(obj, old_obj, schema, [], errors, update=old is not None)
    return obj, list(dict.fromkeys(errors))


def cr_errors(crd: dict[str, Any], obj: Any, *, old: dict[str, Any] | None = None) -> list[str]:
    """Every reason the API server would refuse `obj` (create, or update from `old`)."""
    return _admit(crd, obj, old)[1]


def validate_cr(crd: dict[str, Any], obj: Any, *, old: dict[str, Any] | None = None) -> dict[str, Any]:
    """The object as the server would store it (defaults filled); raises CRValidationError."""
    stored, errors = _admit(crd, obj, old)
    if errors:
        raise CRValidationError(errors)
    return stored


# --- schema linting ----------------------------------------------------------------------------

_NOT_STRUCTURAL = ("$ref", "anyOf", "oneOf", "allOf", "not", "definitions", "$defs", "$schema", "title")
# Python-only constructs, and classes whose meaning differs between RE2 (ASCII) and
# pydantic's Rust regex (Unicode): pydantic and the server would disagree.
_NON_RE2 = {
    "(?=": "lookahead",
    "(?!": "negative lookahead",
    "(?<=": "lookbehind",
    "(?<!": "negative lookbehind",
    "(?P=": "named backreference",
    "\\d": "\\d is ASCII in RE2, Unicode in pydantic",
    "\\w": "\\w is ASCII in RE2, Unicode in pydantic",
    "\\s": "\\s is ASCII in RE2, Unicode in pydantic",
    "\\b": "\\b is ASCII in RE2, Unicode in pydantic",
    "\\Z": "\\Z is Python-only",
}


def _walk(node: dict[str, Any], where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield where or "<root>", node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{where}.{name}" if where else name)
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{where}[]")


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """What would make the API server call the schema non-structural (or our defaults invalid)."""
    problems: list[str] = []
    for where, node in _walk(schema):
        for key in _NOT_STRUCTURAL:
            if key in node:
                problems.append(f"{where}: {key} is not allowed in a structural schema")
        open_node = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        if "type" not in node and not open_node:
            problems.append(f"{where}: has no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{where}: properties and additionalProperties are mutually exclusive")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{where}: array without items")
        if node.get("uniqueItems"):
            problems.append(f"{where}: uniqueItems is forbidden; use x-kubernetes-list-type: set")
        if "default" in node:
            if node["default"] is None:
                problems.append(f"{where}: default null")
            elif not _Validator(_to_jsonschema(node)).is_valid(node["default"]):
                problems.append(f"{where}: default {node['default']!r} does not validate")
        if node.get("x-kubernetes-list-type") == "map":
            item = node.get("items", {})
            for key in node.get("x-kubernetes-list-map-keys", []):
                sub = item.get("properties", {}).get(key)
                if sub is None:
                    problems.append(f"{where}: list-map key {key} is not a property of the items")
                elif key not in item.get("required", []) and "default" not in sub:
                    problems.append(f"{where}: list-map key {key} must be required or defaulted")
    metadata = schema.get("properties", {}).get("metadata", {})
    if set(metadata.get("properties", {})) - {"name", "generateName"}:
        problems.append("metadata: only name and generateName may be restricted")
    return problems


def pattern_problems(pattern: str) -> list[str]:
    """Why `pattern` may not behave the same in Go RE2 (the server) and pydantic."""
    problems = [f"{pattern!r}: {why}" for token, why in _NON_RE2.items() if token in pattern]
    if re.search(r"\\[1-9]", pattern):
        problems.append(f"{pattern!r}: backreference")
    if re.search(r"[*+?}]\+", pattern):
        problems.append(f"{pattern!r}: possessive quantifier")
    for bound in re.findall(r"\{(\d+)(?:,(\d*))?\}", pattern):
        if any(part and int(part) > 1000 for part in bound):
            problems.append(f"{pattern!r}: RE2 repeat counts stop at 1000")
    try:
        re.compile(pattern)
    except re.error as exc:
        problems.append(f"{pattern!r}: {exc}")
    return problems


def cel_cost_problems(schema: dict[str, Any]) -> list[str]:
    """Unbounded strings/lists under a CEL rule blow the server's static cost estimate.

    The estimator assumes unbounded values as large as a whole request (3 MiB),
    so `self == oldSelf` over an unbounded field can exceed the per-rule budget;
    with maxLength/maxItems everywhere the estimate stays small.
    """
    problems: list[str] = []
    for where, node in _walk(schema):
        if not node.get("x-kubernetes-validations"):
            continue
        for sub_where, sub in _walk(node, where if where != "<root>" else ""):
            if sub.get("type") == "string" and "maxLength" not in sub and "enum" not in sub:
                problems.append(f"{sub_where}: string under a CEL rule needs maxLength")
            if sub.get("type") == "array" and "maxItems" not in sub:
                problems.append(f"{sub_where}: list under a CEL rule needs maxItems")
            if sub.get("type") == "object" and "additionalProperties" in sub and "maxProperties" not in sub:
                problems.append(f"{sub_where}: map under a CEL rule needs maxProperties")
    return problems
