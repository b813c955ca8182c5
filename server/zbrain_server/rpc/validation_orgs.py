"""Validation of OrgService requests (the rest of the wire is validated in
`validation`): a message becomes domain values, or INVALID_ARGUMENT names
every problem with its field."""

from __future__ import annotations

import math
from typing import Any

from zbrain.v1 import org_pb2

from ..config import Limits
from .validation import Violations, _check_string_map, _plain_dict

MAX_STARTS_PER_SECOND = 1_000_000.0
MAX_RETENTION_DAYS = 36_500

# Each limit UpdateOrgSettings may set: its largest value, or None when the
# type's own range is the only bound.
_INT_LIMITS: dict[str, int | None] = {
    "max_running_jobs": None,
    "max_waiting_jobs": None,
    "max_log_bytes": None,
    "max_artifact_bytes": None,
    "retention_days": MAX_RETENTION_DAYS,
}


def settings_update(request: org_pb2.UpdateOrgSettingsRequest) -> dict[str, Any]:
    """The limits an update sets, by OrgSettings field name."""
    v = Violations()
    changes: dict[str, Any] = {}
    present = {descriptor.name for descriptor, _ in request.ListFields()}
    for name, most in _INT_LIMITS.items():
        if name not in present:
            continue
        value = getattr(request, name)
        if value < 0 or (most is not None and value > most):
            v.add(
                name,
                f"must be between 0 (none of its own) and {most}"
                if most is not None
                else "must be 0 (none of its own) or more",
            )
        changes[name] = value
    if "max_starts_per_second" in present:
        rate = request.max_starts_per_second
        if not (math.isfinite(rate) and 0 <= rate <= MAX_STARTS_PER_SECOND):
            v.add(
                "max_starts_per_second",
                f"must be 0 (no limit) to {MAX_STARTS_PER_SECOND:.0f} starts per second",
            )
        changes["max_starts_per_second"] = rate
    if not changes:
        v.add("", "names no limit to change (max_running_jobs, max_starts_per_second, ...)")
    v.raise_if_any("invalid organisation settings")
    return changes


def selector(
    message: org_pb2.LabelSelector, present: bool, limits: Limits, field: str = "selector"
) -> dict[str, str] | None:
    """A pause's label selector; None when the request has none (the whole org)."""
    if not present:
        return None
    labels = _plain_dict(message.labels)
    v = Violations()
    if not labels:
        v.add(f"{field}.labels", "must name at least one label (omit the selector for the org)")
    _check_string_map(
        labels,
        f"{field}.labels",
        v,
        max_entries=limits.max_labels,
        max_entry_bytes=limits.max_label_bytes,
    )
    v.raise_if_any("invalid label selector")
    return labels
