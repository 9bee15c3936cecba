"""The cap policy: the caps every user has without a row of their own.

One `CapPolicy` row per period (hourly, daily, monthly, session) holds the effective limits. A
limit set in YAML or the environment (`usage_caps.default_<period>_<limit>`) is copied into
its row when the policy is loaded and wins over an edit in admin, where it shows read-only;
the others are edited in admin (`policy_update`). A tightening, from either side, blocks only
after the grace period, like an administrator's cap.

The policy is read live: a user's caps are the policy's rules for every period where no
administrator cap of theirs exists, plus their own caps. A change publishes a new policy
version (owner 0 in the counter store, next to the users' versions); every process checks it
at most once a second (`RECHECK_SECONDS`) and reloads its cached caps when it moved, so a
change reaches every user in every process within a second, with no per-user rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from caps.grace import enforced_now, grace_apply
from caps.models import CapPolicy
from caps.rules import LIMIT_FIELDS, CapRule, rule_of
from caps.windows import SESSION, WINDOW_TYPES
from config import clock

# The counter store's version key of the policy: no user has id 0 (teams are negative ids).
POLICY_OWNER = 0
RECHECK_SECONDS = 1.0
_SUFFIXES = {"max_requests": "requests", "max_tokens": "tokens", "max_cost_cents": "cost_cents"}


@dataclass(frozen=True)
class Policy:
    """The policy's rules (set_by "policy") and the version they were read at."""

    version: str
    rules: tuple[CapRule, ...]

    def rule(self, cap_type: str) -> CapRule | None:
        return next((rule for rule in self.rules if rule.cap_type == cap_type), None)


def setting_name(cap_type: str, field: str) -> str | None:
    """`default_daily_cost_cents` for ("daily", "max_cost_cents"); None where no such setting
    exists (a session limits cost only)."""
    if cap_type == SESSION and field != "max_cost_cents":
        return None
    return f"default_{cap_type}_{_SUFFIXES[field]}"


def configured(cap_type: str) -> dict[str, int | None]:
    """The period's limits as configured (built-in default, YAML or environment)."""
    conf = settings.GATEWAY.usage_caps
    values: dict[str, int | None] = {}
    for field in LIMIT_FIELDS:
        name = setting_name(cap_type, field)
        values[field] = None if name is None else getattr(conf, name)
    return values


def locked_fields(cap_type: str) -> set[str]:
    """The period's limits set in YAML or the environment: admin shows them read-only."""
    explicit = settings.GATEWAY.usage_caps.model_fields_set
    return {
        field
        for field in LIMIT_FIELDS
        if (name := setting_name(cap_type, field)) is not None and name in explicit
    }


def _limits(row: CapPolicy) -> tuple[int | None, int | None, int | None]:
    return (row.max_requests, row.max_tokens, row.max_cost_cents)


def _set(row: CapPolicy, values: dict[str, Any], now: datetime) -> bool:
    """Give `row` these limits with the grace rules; True if anything changed."""
    if all(getattr(row, f) == values.get(f, getattr(row, f)) for f in LIMIT_FIELDS):
        return False
    was_enforced = enforced_now(row, now)
    for field, value in values.items():
        setattr(row, field, value)
    grace_apply(row, was_enforced, now, by_admin=True)
    return True


def policy_rows(*, now: datetime | None = None) -> dict[str, CapPolicy]:
    """The policy's rows, created from the configuration on first use, with the limits set in
    YAML or the environment applied (a changed one is saved with the grace rules)."""
    now = now or clock.now()
    rows = {row.cap_type: row for row in CapPolicy.objects.all()}
    changed = []
    for cap_type in WINDOW_TYPES:
        row = rows.get(cap_type)
        if row is None:
            # First start: the configured limits apply at once (nothing blocked before).
            row = CapPolicy(cap_type=cap_type, **configured(cap_type))
            rows[cap_type] = row
            changed.append(row)
            continue
        config = configured(cap_type)
        if _set(row, {f: config[f] for f in locked_fields(cap_type)}, now):
            changed.append(row)
    if changed:
        try:
            with transaction.atomic():
                for row in changed:
                    row.save()
                _publish()
        except IntegrityError:
            # Another process created the rows at the same moment: theirs are the same.
            return {row.cap_type: row for row in CapPolicy.objects.all()}
    return rows


def policy_load(*, version: str, now: datetime | None = None) -> Policy:
    rules = tuple(
        rule_of(row, set_by="policy")
        for row in policy_rows(now=now).values()
        if any(value is not None for value in _limits(row))
    )
    return Policy(version=version, rules=rules)


def policy_update(*, cap_type: str, now: datetime | None = None, **limits: Any) -> CapPolicy:
    """Change the policy of one period (admin); a limit set in YAML or the environment cannot
    be changed here. A tightening blocks after the grace period, for every user at once."""
    now = now or clock.now()
    if cap_type not in WINDOW_TYPES:
        raise ValidationError({"cap_type": [f'"{cap_type}" is not a period.']})
    errors: dict[str, list[str]] = {}
    for field, value in limits.items():
        if field not in LIMIT_FIELDS:
            raise ValueError(f"unknown limit {field}")
        if field in locked_fields(cap_type) and value != configured(cap_type)[field]:
            name = setting_name(cap_type, field)
            errors[field] = [f"Set by usage_caps.{name} in the configuration; change it there."]
        elif value is not None and (not isinstance(value, int) or value <= 0):
            errors[field] = ["Ensure this value is greater than or equal to 1, or empty."]
        elif cap_type == SESSION and field != "max_cost_cents" and value is not None:
            errors[field] = ["A session cap limits cost only."]
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        row = policy_rows(now=now)[cap_type]
        row = CapPolicy.objects.select_for_update().get(pk=row.pk)
        if _set(row, limits, now):
            row.save()
            _publish()
    return row


def _publish() -> None:
    from caps.cache import cap_config_changed  # caps.cache reads the policy

    cap_config_changed(user_id=POLICY_OWNER)
