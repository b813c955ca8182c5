"""Validation of templates and schedules as they arrive (the rest of the
wire is validated in `validation`): a message becomes domain values, or
INVALID_ARGUMENT names every problem with its field."""

from __future__ import annotations

from collections.abc import Mapping

from zbrain.errors import FieldViolation, InvalidArgumentError
from zbrain.models import CatchUpPolicy, OverlapPolicy, ParameterType
from zbrain.v1 import job_pb2, schedule_pb2, template_pb2

from ..config import Limits
from ..core import schedules, templates
from ..core.schedules import Schedule, TemplateRef, TimingError
from ..core.templates import Parameter, Template
from .validation import Violations, _enum_or_none, checked_duration_us

MAX_DESCRIPTION_BYTES = 1024


def template_name(name: str, field: str = "name") -> str:
    """A template's name, or INVALID_ARGUMENT naming `field`."""
    if not templates.TEMPLATE_NAME_PATTERN.match(name):
        raise InvalidArgumentError(
            "invalid template name",
            violations=[FieldViolation(field, templates.TEMPLATE_NAME_RULE)],
        )
    return name


def schedule_id(value: str, field: str = "schedule_id") -> str:
    """A schedule's id, or INVALID_ARGUMENT naming `field`."""
    if not schedules.SCHEDULE_ID_PATTERN.match(value):
        raise InvalidArgumentError(
            "invalid schedule id", violations=[FieldViolation(field, schedules.SCHEDULE_ID_RULE)]
        )
    return value


def version(value: int, field: str = "version") -> int:
    if value < 0:
        raise InvalidArgumentError(
            "invalid version", violations=[FieldViolation(field, "must be 0 (the latest) or more")]
        )
    return value


def new_template(
    message: template_pb2.Template, org_id: str, limits: Limits, now_us: int
) -> Template:
    """The template to store from a CreateTemplate request (its version is
    the store's to number). Its job is checked as a submission would be, by
    the caller (`Api`), before this."""
    v = Violations()
    if not templates.TEMPLATE_NAME_PATTERN.match(message.name):
        v.add("template.name", templates.TEMPLATE_NAME_RULE)
    if len(message.description.encode()) > MAX_DESCRIPTION_BYTES:
        v.add("template.description", f"must be at most {MAX_DESCRIPTION_BYTES} bytes")
    if not message.HasField("job"):
        v.add("template.job", "must give the job to submit")
    if len(message.parameters) > limits.max_template_parameters:
        v.add(
            "template.parameters",
            f"declares {len(message.parameters)}; the limit (max_template_parameters) is "
            f"{limits.max_template_parameters}",
        )
    parameters = []
    for i, declared in enumerate(message.parameters):
        kind = _enum_or_none(ParameterType, declared.type)
        if kind is None and declared.type:
            v.add(f"template.parameters[{i}].type", "is not a parameter type")
        parameters.append(
            Parameter(
                declared.name,
                kind or ParameterType.STRING,
                declared.required,
                declared.default_json,
                declared.description[:MAX_DESCRIPTION_BYTES],
            )
        )
    v.raise_if_any("invalid template")
    job = message.job
    used = templates.placeholders([*job.cmd, *job.env.values(), job.input_json])
    templates.check_parameters(parameters, used, "template")
    return Template(
        org_id=org_id,
        name=message.name,
        version=0,
        job_spec=job.SerializeToString(deterministic=True),
        parameters=tuple(parameters),
        description=message.description,
        create_time_us=now_us,
    )


def rendered_spec(template: Template, given: Mapping[str, str], limits: Limits) -> job_pb2.JobSpec:
    """The template's job with the submission's parameters put in (see
    `core.templates`); INVALID_ARGUMENT naming any parameter unknown,
    missing or of the wrong type, or when the values would make a job past
    the limits on its texts."""
    values = templates.values(template, given)
    budget = limits.max_cmd_bytes + limits.max_env_bytes + limits.max_input_bytes
    rendering = templates.Rendering(values, budget)
    spec = job_pb2.JobSpec.FromString(template.job_spec)
    try:
        cmd = [rendering.text(arg) for arg in spec.cmd]
        env = {name: rendering.text(value) for name, value in spec.env.items()}
        input_json = rendering.json(spec.input_json) if spec.input_json else ""
    except templates.RenderingTooLarge:
        raise InvalidArgumentError(
            "parameters too large",
            violations=[
                FieldViolation(
                    "parameters",
                    f"the values put into the template make more than {budget} bytes of "
                    "arguments, environment and input",
                )
            ],
        ) from None
    except RecursionError:  # a JSON value nested in a JSON input, past what can be written
        raise InvalidArgumentError(
            "parameters nested too deeply",
            violations=[FieldViolation("parameters", "make an input nested too deeply")],
        ) from None
    del spec.cmd[:]
    spec.cmd.extend(cmd)
    spec.env.clear()
    spec.env.update(env)
    spec.input_json = input_json
    return spec


def new_schedule(
    message: schedule_pb2.Schedule, org_id: str, limits: Limits, now_us: int, field: str
) -> Schedule:
    """The schedule to store from a Create or Update request, ticking from
    now. Its job (or template) is checked by the caller (`Api`)."""
    v = Violations()
    if not schedules.SCHEDULE_ID_PATTERN.match(message.id):
        v.add(f"{field}.id", schedules.SCHEDULE_ID_RULE)
    interval_us = (
        checked_duration_us(message.interval, f"{field}.interval", v)
        if message.HasField("interval")
        else 0
    )
    if interval_us is not None:
        try:
            schedules.check_timing(message.cron.strip(), message.time_zone, interval_us)
        except TimingError as exc:
            v.add(f"{field}.{exc.field}", str(exc))
    has_job, has_template = message.HasField("job"), message.HasField("template")
    if has_job == has_template:
        v.add(f"{field}.job", "give either a job or a template, not both or neither")
    if has_template:
        if not templates.TEMPLATE_NAME_PATTERN.match(message.template.name):
            v.add(f"{field}.template.name", templates.TEMPLATE_NAME_RULE)
        if message.template.version < 0:
            v.add(f"{field}.template.version", "must be 0 (the latest) or more")
    overlap = _enum_or_none(OverlapPolicy, message.overlap)
    if overlap is None and message.overlap:
        v.add(f"{field}.overlap", "must be ALLOW, SKIP or CANCEL_PREVIOUS")
    catch_up = _enum_or_none(CatchUpPolicy, message.catch_up)
    if catch_up is None and message.catch_up:
        v.add(f"{field}.catch_up", "must be SKIP or RUN_ONCE")
    v.raise_if_any("invalid schedule")
    schedule = Schedule(
        org_id=org_id,
        id=message.id,
        cron=message.cron.strip(),
        time_zone=message.time_zone,
        interval_us=interval_us or 0,  # None only with a violation, raised above
        job_spec=message.job.SerializeToString(deterministic=True) if has_job else b"",
        template=(
            TemplateRef(
                message.template.name,
                message.template.version,
                dict(message.template.parameters),
            )
            if has_template
            else None
        ),
        overlap=overlap or OverlapPolicy.SKIP,
        catch_up=catch_up or CatchUpPolicy.SKIP,
        paused=message.paused,
        next_fire_time_us=None,
        last_fire_time_us=None,
        last_job_id="",
        create_time_us=now_us,
        update_time_us=now_us,
    )
    if not schedule.paused:
        schedule.next_fire_time_us = schedules.next_tick(schedule, now_us)
    return schedule
