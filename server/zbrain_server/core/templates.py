"""Job templates: named, versioned job specs with typed `{{ name }}` parameters.

A template's job is kept in its wire form (a serialized JobSpec, `job_spec`),
opaque below the edge, so that every field a job may carry is carried by a
template too, and submitting from one goes through the same validation as
any submission. What lives here is the part with rules of its own: checking
a template's parameters, reading the values a submission gives, and putting
them into text and JSON.

Substitution is textual inside strings and never builds a shell command: a
`{{ name }}` inside an argument, an environment value or a JSON string is
replaced by the value's text (a string as it is, anything else as compact
JSON); a JSON string that is exactly `{{ name }}` becomes the typed value
itself, so `{"count": "{{ n }}"}` with n=3 is `{"count": 3}`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zbrain.errors import FieldViolation, InvalidArgumentError
from zbrain.models import ParameterType

UNKNOWN_LISTED = 20
"""Unknown parameters of a submission named one by one; the rest are counted."""
NAME_SHOWN = 64
"""Characters of a parameter name an answer repeats (a declared one has at most 64)."""
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_]*)\s*\}\}")
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
NAME_RULE = "must be 1 to 64 letters, digits or '_', starting with a letter"
TEMPLATE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
TEMPLATE_NAME_RULE = (
    "must be 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
)


@dataclass(slots=True, frozen=True)
class Parameter:
    """One `{{ name }}` a template takes."""

    name: str
    type: ParameterType = ParameterType.STRING
    required: bool = False
    default_json: str = ""  # the value when a submission gives none, as JSON text
    description: str = ""


@dataclass(slots=True, frozen=True)
class Template:
    """One version of a named template."""

    org_id: str
    name: str
    version: int
    job_spec: bytes  # a serialized zbrain.v1.JobSpec
    parameters: tuple[Parameter, ...]
    description: str
    create_time_us: int


def placeholders(texts: Iterable[str]) -> set[str]:
    """The parameter names used in these texts."""
    return {match.group(1) for text in texts for match in PLACEHOLDER.finditer(text)}


def check_parameters(parameters: Iterable[Parameter], used: set[str], field: str) -> None:
    """InvalidArgumentError unless the parameters are well-formed, named once
    each, their defaults of their types, and every name the job uses declared."""
    violations: list[FieldViolation] = []
    seen: set[str] = set()
    for i, parameter in enumerate(parameters):
        where = f"{field}.parameters[{i}]"
        if not NAME_PATTERN.match(parameter.name):
            violations.append(FieldViolation(f"{where}.name", NAME_RULE))
        elif parameter.name in seen:
            violations.append(
                FieldViolation(f"{where}.name", f"{parameter.name!r} is declared twice")
            )
        seen.add(parameter.name)
        if parameter.default_json:
            try:
                typed(parameter, parameter.default_json, strict=True)
            except ValueError as exc:
                violations.append(FieldViolation(f"{where}.default_json", str(exc)))
        if parameter.required and parameter.default_json:
            violations.append(
                FieldViolation(f"{where}.default_json", "a required parameter takes no default")
            )
    for name in sorted(used - seen):
        violations.append(
            FieldViolation(
                f"{field}.job", f"uses {{{{ {name} }}}} but declares no parameter {name!r}"
            )
        )
    if violations:
        raise InvalidArgumentError(violations[0].description, violations=violations)


def typed(parameter: Parameter, text: str, *, strict: bool = False) -> Any:
    """The value of a parameter given as JSON text; a STRING parameter also
    takes bare text (unless `strict`, as for defaults). ValueError saying why
    when the text is not a value of the parameter's type."""
    kind = parameter.type
    if kind is ParameterType.STRING:
        if not strict and not text.startswith('"'):
            return text
        value = _json(text)
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {text}")
        return value
    value = _json(text)
    if kind is ParameterType.INTEGER and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"must be a whole number, not {text}")
    if kind is ParameterType.NUMBER and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    ):
        raise ValueError(f"must be a number, not {text}")
    if kind is ParameterType.BOOLEAN and not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {text}")
    return value


def _json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise ValueError("is nested too deeply") from None
    except ValueError:
        raise ValueError(f"is not valid JSON: {text[:80]}") from None


def _not_json(constant: str) -> Any:
    """NaN and Infinity, which Python's json reads but JSON has not."""
    raise ValueError(f"{constant} is not JSON")


def values(template: Template, given: Mapping[str, str]) -> dict[str, Any]:
    """The value of every parameter of a submission: given, or the default.
    InvalidArgumentError naming the parameter when one is unknown, missing or
    not of its type."""
    declared = {parameter.name: parameter for parameter in template.parameters}
    unknown = sorted(set(given) - set(declared))
    violations = [
        FieldViolation(
            f"parameters[{name[:NAME_SHOWN]}]",
            f"template {template.name!r} version {template.version} has no parameter "
            f"{name[:NAME_SHOWN]!r}",
        )
        for name in unknown[:UNKNOWN_LISTED]
    ]
    if (
        len(unknown) > UNKNOWN_LISTED
    ):  # a request of a million names is not answered a million times
        violations.append(
            FieldViolation(
                "parameters", f"and {len(unknown) - UNKNOWN_LISTED} more unknown parameters"
            )
        )
    resolved: dict[str, Any] = {}
    for name, parameter in declared.items():
        field = f"parameters[{name}]"
        if name in given:
            try:
                resolved[name] = typed(parameter, given[name])
            except ValueError as exc:
                violations.append(FieldViolation(field, f"{name} {exc}"))
        elif parameter.default_json:
            resolved[name] = typed(parameter, parameter.default_json, strict=True)
        elif parameter.required:
            violations.append(FieldViolation(field, f"the required parameter {name!r} is missing"))
        else:  # optional without a default: empty text, or null for a typed value
            resolved[name] = "" if parameter.type is ParameterType.STRING else None
    if violations:
        raise InvalidArgumentError(violations[0].description, violations=violations)
    return resolved


class RenderingTooLarge(ValueError):
    """Putting the values in would make the job's texts larger than allowed."""


class Rendering:
    """Puts a submission's values into a template's texts, adding at most
    `budget_bytes` of values in all: however often a template repeats a
    placeholder and however large a value is, the job made is bounded before
    it is built (RenderingTooLarge past it); the job's own limits then apply
    to the result. A placeholder that names no value (one written with JSON
    escapes inside the input, which the template's check does not see) is
    left as it is."""

    def __init__(self, values: Mapping[str, Any], budget_bytes: int) -> None:
        self._values = values
        self._texts = {name: _text(value) for name, value in values.items()}
        # Inside a JSON string, a text is escaped; a whole value is written as JSON.
        self._json_sizes = {
            name: max(len(json.dumps(text)), len(json.dumps(values[name])))
            for name, text in self._texts.items()
        }
        self._left = budget_bytes

    def text(self, text: str) -> str:
        """`text` with every `{{ name }}` replaced by its value's text."""
        return PLACEHOLDER.sub(self._text_of, text)

    def json(self, text: str) -> str:
        """JSON text with its strings rendered; a string that is exactly one
        placeholder becomes the typed value."""
        if "{{" not in text:
            return text
        return json.dumps(self._value(json.loads(text)))

    def _text_of(self, match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in self._texts:
            return match.group(0)
        self._spend(len(self._texts[name]))
        return self._texts[name]

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            whole = PLACEHOLDER.fullmatch(value.strip())
            if whole is not None and whole.group(1) in self._values:
                self._spend(self._json_sizes[whole.group(1)])
                return self._values[whole.group(1)]
            if "{{" not in value:
                return value
            return PLACEHOLDER.sub(self._json_text_of, value)
        if isinstance(value, list):
            return [self._value(item) for item in value]
        if isinstance(value, dict):
            return {key: self._value(item) for key, item in value.items()}
        return value

    def _json_text_of(self, match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in self._texts:
            return match.group(0)
        self._spend(self._json_sizes[name])
        return self._texts[name]

    def _spend(self, size: int) -> None:
        self._left -= size
        if self._left < 0:
            raise RenderingTooLarge("the values make the job too large")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
