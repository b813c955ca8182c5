"""Template parameters: declared, typed, and put into text and JSON without
ever building a shell command."""

from __future__ import annotations

import json

import pytest

from zbrain.errors import FieldViolation, InvalidArgumentError
from zbrain.models import ParameterType
from zbrain_server.core import templates
from zbrain_server.core.templates import Parameter, Template


def template(*parameters: Parameter) -> Template:
    return Template("acme", "t", 1, b"", parameters, "", 0)


def test_values_take_given_text_typed_defaults_and_refuse_what_is_wrong() -> None:
    t = template(
        Parameter("who", required=True),
        Parameter("n", ParameterType.INTEGER, default_json="3"),
        Parameter("ratio", ParameterType.NUMBER),
        Parameter("on", ParameterType.BOOLEAN, default_json="false"),
        Parameter("extra", ParameterType.JSON),
    )

    assert templates.values(t, {"who": "world", "ratio": "0.5", "extra": '{"a": [1]}'}) == {
        "who": "world",
        "n": 3,
        "ratio": 0.5,
        "on": False,
        "extra": {"a": [1]},
    }
    for given, field in (
        ({}, "parameters[who]"),
        ({"who": "x", "n": "2.5"}, "parameters[n]"),
        ({"who": "x", "n": "true"}, "parameters[n]"),
        ({"who": "x", "on": "yes"}, "parameters[on]"),
        ({"who": "x", "ratio": "NaN"}, "parameters[ratio]"),
        ({"who": "x", "bogus": "1"}, "parameters[bogus]"),
    ):
        with pytest.raises(InvalidArgumentError) as refused:
            templates.values(t, given)
        assert refused.value.violations[0].field == field, given


def test_text_is_rendered_and_a_whole_json_string_becomes_the_typed_value() -> None:
    values = {"who": "a b; rm -rf /", "n": 3, "cfg": {"k": True}}

    rendering = templates.Rendering(values, 1000)

    assert rendering.text("hello {{ who }} x{{n}}") == "hello a b; rm -rf / x3"
    rendered = json.loads(
        rendering.json('{"n": "{{ n }}", "label": "n={{ n }}", "cfg": "{{cfg}}"}')
    )
    assert rendered == {"n": 3, "label": "n=3", "cfg": {"k": True}}


def test_rendering_stops_at_its_budget_however_often_a_value_is_repeated() -> None:
    values = {"big": "x" * 1000}

    assert len(templates.Rendering(values, 3000).text("{{big}}" * 3)) == 3000
    with pytest.raises(templates.RenderingTooLarge):
        templates.Rendering(values, 3000).text("{{big}}" * 4)
    with pytest.raises(templates.RenderingTooLarge):
        templates.Rendering(values, 3000).json(json.dumps(["{{ big }}"] * 4))


def test_a_placeholder_naming_no_value_is_left_as_it_is() -> None:
    # Written with JSON escapes, it escaped the template's check of names used.
    rendering = templates.Rendering({"n": 1}, 1000)

    assert json.loads(rendering.json('["{{ n }}", "\\u007b\\u007b other }}"]')) == [
        1,
        "{{ other }}",
    ]


def test_nested_or_non_json_parameter_values_are_refused_as_values() -> None:
    t = template(Parameter("cfg", ParameterType.JSON))

    for text in ("[" * 100_000 + "]" * 100_000, "NaN", "[Infinity]"):
        with pytest.raises(InvalidArgumentError) as refused:
            templates.values(t, {"cfg": text})
        assert refused.value.violations[0].field == "parameters[cfg]"


def test_a_template_must_declare_what_it_uses_once_with_defaults_of_their_types() -> None:
    used = templates.placeholders(["run {{ day }}", '{"x": "{{ size }}"}'])
    assert used == {"day", "size"}

    for parameters, words in (
        ((Parameter("day"),), "size"),
        ((Parameter("day"), Parameter("size"), Parameter("day")), "twice"),
        ((Parameter("day"), Parameter("size", ParameterType.INTEGER, default_json='"x"')), "whole"),
        ((Parameter("day", required=True, default_json='"mon"'), Parameter("size")), "default"),
        ((Parameter("1day"), Parameter("day"), Parameter("size")), "letters"),
    ):
        with pytest.raises(InvalidArgumentError) as refused:
            templates.check_parameters(parameters, used, "template")
        assert words in str(refused.value.violations), parameters


def test_unknown_parameters_past_a_few_are_counted_not_listed() -> None:
    t = template(Parameter("who"))

    with pytest.raises(InvalidArgumentError) as refused:
        templates.values(t, {f"p{i}" + "x" * 1000: "1" for i in range(10_000)})

    violations = refused.value.violations
    assert len(violations) == templates.UNKNOWN_LISTED + 1
    assert all(len(v.field) < 100 for v in violations)
    assert violations[-1] == FieldViolation(
        "parameters", f"and {10_000 - templates.UNKNOWN_LISTED} more unknown parameters"
    )
