"""Caps as CSV for administrators: import (preview with errors by row, then apply all or
nothing) and export of every active cap with its use in the current window.

Columns: `subject,period,max_requests,max_tokens,max_cost_usd` — subject is a user's e-mail
or `team:<name>`; an empty limit is no limit. An exported file has the same first columns
(and `set_by` plus the use, which an import ignores), so it can be edited and imported again:
rows of a user's own caps (`set_by` user) and of the policy (subject `policy`) are listed but
not imported — an import writes administrator and team caps only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.functions import Lower

from accounts.models import Team
from caps.bulk import Limits, admin_cap_put, limits_problems, put_action, team_cap_put
from caps.errors import CapStoreUnavailable
from caps.models import CapPolicy, SetBy, TeamCapConfig, UserCapConfig
from caps.status import cap_status, team_cap_status
from config import clock

COLUMNS = ("subject", "period", "max_requests", "max_tokens", "max_cost_usd")
EXPORT_COLUMNS = (
    *COLUMNS,
    "set_by",
    "requests_used",
    "tokens_used",
    "cost_used_usd",
    "percent_used",
    "reset_time",
)
TEAM_PREFIX = "team:"
POLICY_SUBJECT = "policy"
MAX_IMPORT_BYTES = 1024 * 1024
MAX_IMPORT_ROWS = 10_000
MAX_REPORTED_ERRORS = 200
# The database's column limits: a larger number is refused by row, not by a database error.
MAX_REQUESTS = 2**31 - 1
MAX_BIG = 2**63 - 1
# A spreadsheet runs a cell that starts with one of these as a formula: exported cells get a
# leading apostrophe, which the import takes off again.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class RowError:
    """One reason the file was rejected; row None is about the whole file."""

    row: int | None
    field: str | None
    message: str


@dataclass(frozen=True)
class PreviewRow:
    """One row of the file and what applying it does."""

    row: int
    subject: str
    period: str
    limits: Limits
    # "create", "update", "unchanged", or "ignored" (a user's own cap, a policy row).
    action: str
    before: Limits | None = None
    note: str = ""
    user_id: int | None = None
    team_id: int | None = None


@dataclass
class ImportPreview:
    """What importing a file would do, or why it cannot."""

    rows: list[PreviewRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def count(self, action: str) -> int:
        return sum(row.action == action for row in self.rows)


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    unchanged: int
    ignored: int


class CapsImportError(Exception):
    """The file was rejected; nothing was applied."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(f"{len(errors)} error(s) in the caps file")
        self.errors = errors


class _RowProblem(Exception):
    def __init__(self, column: str | None, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


def _unformula(cell: str) -> str:
    if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS):
        return cell[1:]
    return cell


def _whole(value: str, column: str, ceiling: int) -> int | None:
    if value == "":
        return None
    if not value.isascii() or not value.isdigit():
        raise _RowProblem(column, "must be a whole number greater than zero, or empty")
    number = int(value)
    if number <= 0:
        raise _RowProblem(column, "must be greater than zero (empty: no limit)")
    if number > ceiling:
        raise _RowProblem(column, f"must be at most {ceiling}")
    return number


def _cents(value: str) -> int | None:
    if value == "":
        return None
    text = value.removeprefix("$").replace(",", "")
    try:
        dollars = Decimal(text)
    except InvalidOperation:
        raise _RowProblem("max_cost_usd", "must be an amount in dollars, e.g. 250.00") from None
    if not dollars.is_finite() or not text.isascii():
        raise _RowProblem("max_cost_usd", "must be an amount in dollars, e.g. 250.00")
    if dollars <= 0:
        raise _RowProblem("max_cost_usd", "must be greater than zero (empty: no limit)")
    cents = dollars * 100
    if cents != cents.to_integral_value():
        raise _RowProblem("max_cost_usd", "must be whole cents (at most two decimals)")
    if cents > MAX_BIG:
        raise _RowProblem("max_cost_usd", "is too large")
    return int(cents)


@dataclass(frozen=True)
class _Targets:
    """Who the file's subjects name: users by e-mail, teams by name (looked up at once)."""

    users: dict[str, int]
    teams: dict[str, int]

    @classmethod
    def of(cls, records: list[dict[str, str]]) -> _Targets:
        emails, names = set(), set()
        for record in records:
            subject = record["subject"]
            if subject.lower().startswith(TEAM_PREFIX):
                names.add(subject[len(TEAM_PREFIX) :].strip())
            else:
                emails.add(subject.lower())
        users = dict(
            get_user_model()
            .objects.annotate(email_lower=Lower("email"))
            .filter(email_lower__in=emails)
            .values_list("email_lower", "pk")
        )
        teams = dict(Team.objects.filter(name__in=names).values_list("name", "pk"))
        return cls(users=users, teams=teams)


def _parse(record: dict[str, str], targets: _Targets) -> PreviewRow | _RowProblem:
    """A data row as a change, or why it cannot be one (without the row number)."""
    subject, period = record["subject"], record["period"].lower()
    set_by = record.get("set_by", "").lower()
    if subject == "":
        return _RowProblem("subject", "is empty: a user's e-mail or team:<name>")
    if subject.lower() == POLICY_SUBJECT or set_by == "policy":
        return _ignored(record, "the cap policy: edit it in Cap policy")
    if set_by == SetBy.USER:
        return _ignored(record, "the user's own cap: only they change it")
    try:
        limits = Limits(
            max_requests=_whole(record["max_requests"], "max_requests", MAX_REQUESTS),
            max_tokens=_whole(record["max_tokens"], "max_tokens", MAX_BIG),
            max_cost_cents=_cents(record["max_cost_usd"]),
        )
    except _RowProblem as problem:
        return problem
    team = subject.lower().startswith(TEAM_PREFIX)
    problems = limits_problems(period=period, limits=limits, team=team)
    if problems:
        column = "period" if problems[0].startswith(("unknown period", "a team cap")) else None
        return _RowProblem(column, "; ".join(problems))
    if team:
        name = subject[len(TEAM_PREFIX) :].strip()
        team_id = targets.teams.get(name)
        if team_id is None:
            return _RowProblem("subject", f"no team named {_shown(name)}")
        return PreviewRow(0, f"{TEAM_PREFIX}{name}", period, limits, "", team_id=team_id)
    user_id = targets.users.get(subject.lower())
    if user_id is None:
        return _RowProblem("subject", f"no user with the e-mail {_shown(subject)}")
    return PreviewRow(0, subject, period, limits, "", user_id=user_id)


def _shown(value: str) -> str:
    """A cell quoted in a message: at most 80 characters of it (a hostile file's may be huge)."""
    return repr(value if len(value) <= 80 else f"{value[:80]}…")


def _ignored(record: dict[str, str], note: str) -> PreviewRow:
    return PreviewRow(0, record["subject"], record["period"], Limits(), "ignored", note=note)


def _with_actions(rows: list[PreviewRow]) -> list[PreviewRow]:
    """Each row with what it would do to the caps as they are now."""
    user_caps = {
        (cap.user_id, cap.cap_type): cap
        for cap in UserCapConfig.objects.filter(
            set_by=SetBy.ADMIN, user_id__in={r.user_id for r in rows if r.user_id}
        )
    }
    team_caps = {
        (cap.team_id, cap.cap_type): cap
        for cap in TeamCapConfig.objects.filter(team_id__in={r.team_id for r in rows if r.team_id})
    }
    done = []
    for row in rows:
        if row.action == "ignored":
            done.append(row)
            continue
        if row.user_id is not None:
            existing = user_caps.get((row.user_id, row.period))
        else:
            existing = team_caps.get((row.team_id, row.period))
        done.append(
            replace(
                row,
                action=put_action(existing=existing, limits=row.limits),
                before=None if existing is None else Limits.of(existing),
            )
        )
    return done


def caps_import_preview(*, text: str) -> ImportPreview:
    """Parse and check a caps file without applying it; says what each row would do."""
    if len(text.encode("utf-8")) > MAX_IMPORT_BYTES:
        return ImportPreview(errors=[RowError(None, None, "file is larger than 1 MB")])
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        return _preview_of(reader)
    except csv.Error as exc:  # a broken quote, a field over csv.field_size_limit(), ...
        return ImportPreview(errors=[RowError(reader.line_num or 1, None, f"not CSV: {exc}")])


def _preview_of(reader) -> ImportPreview:  # a csv.reader
    header = [name.strip().lower() for name in next(reader, None) or []]
    missing = [name for name in COLUMNS if name not in header]
    if missing or len(set(header)) != len(header):
        expected = ",".join(COLUMNS)
        return ImportPreview(
            errors=[
                RowError(1, None, f"the header must start with {expected} (extra columns ignored)")
            ]
        )
    records: list[tuple[int, dict[str, str]]] = []
    preview = ImportPreview()
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        if len(records) >= MAX_IMPORT_ROWS:
            return ImportPreview(errors=[RowError(None, None, f"more than {MAX_IMPORT_ROWS} rows")])
        if len(cells) != len(header):
            preview.errors.append(
                RowError(
                    reader.line_num, None, f"has {len(cells)} fields, the header {len(header)}"
                )
            )
            continue
        cleaned = (_unformula(cell.strip()) for cell in cells)
        records.append((reader.line_num, dict(zip(header, cleaned, strict=True))))
    targets = _Targets.of([record for _, record in records])
    seen: dict[tuple[int | None, int | None, str], int] = {}
    for line, record in records:
        parsed = _parse(record, targets)
        if isinstance(parsed, _RowProblem):
            preview.errors.append(RowError(line, parsed.column, parsed.message))
            continue
        key = (parsed.user_id, parsed.team_id, parsed.period)
        if parsed.action != "ignored":
            if key in seen:
                preview.errors.append(
                    RowError(line, "subject", f"same subject and period as row {seen[key]}")
                )
                continue
            seen[key] = line
        preview.rows.append(replace(parsed, row=line))
    return _finished(preview)


def _finished(preview: ImportPreview) -> ImportPreview:
    """The checked rows with their actions; or, if any row is bad, only the errors (the first
    MAX_REPORTED_ERRORS of them)."""
    if not preview.rows and not preview.errors:
        preview.errors.append(RowError(None, None, "file has no data rows"))
    if preview.errors:
        preview.rows = []
        if len(preview.errors) > MAX_REPORTED_ERRORS:
            more = len(preview.errors) - MAX_REPORTED_ERRORS
            preview.errors = [
                *preview.errors[:MAX_REPORTED_ERRORS],
                RowError(None, None, f"... and {more} more errors"),
            ]
        return preview
    preview.rows = _with_actions(preview.rows)
    return preview


def caps_import_csv(*, text: str, now: datetime | None = None) -> ImportResult:
    """Check and apply a caps file in one transaction, through the cap services (grace period,
    caches); CapsImportError, and nothing changed, if any row is bad."""
    preview = caps_import_preview(text=text)
    if not preview.ok:
        raise CapsImportError(preview.errors)
    now = now or clock.now()
    actions = []
    try:
        with transaction.atomic():
            for row in preview.rows:
                if row.action == "ignored":
                    actions.append("ignored")
                elif row.user_id is not None:
                    actions.append(
                        admin_cap_put(
                            user_id=row.user_id, period=row.period, limits=row.limits, now=now
                        )
                    )
                else:
                    actions.append(
                        team_cap_put(
                            team_id=row.team_id,  # type: ignore[arg-type]  # a team's row
                            period=row.period,
                            limits=row.limits,
                            now=now,
                        )
                    )
    except ValidationError as exc:
        # Checked in the preview: only a concurrent change gets here.
        raise CapsImportError([RowError(None, None, "; ".join(exc.messages))]) from None
    return ImportResult(
        created=actions.count("create"),
        updated=actions.count("update"),
        unchanged=actions.count("unchanged"),
        ignored=actions.count("ignored"),
    )


# --- Export --------------------------------------------------------------------------------------


def _formula_safe(cell: str) -> str:
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell


def _usd(cents: int | Decimal | None, places: str = "0.01") -> str:
    if cents is None:
        return ""
    return str((Decimal(cents) / 100).quantize(Decimal(places)))


def _limit_cells(cap: Any) -> list[str]:
    return [
        "" if cap.max_requests is None else str(cap.max_requests),
        "" if cap.max_tokens is None else str(cap.max_tokens),
        _usd(cap.max_cost_cents),
    ]


def _use_cells(status: dict | None) -> list[str]:
    """The use in the cap's current window; empty when unknown (a session cap: its use is per
    session; the counter store down; a policy row: its use is per user)."""
    if status is None:
        return ["", "", "", "", ""]
    used = status["current_usage"]
    return [
        str(used["requests"]),
        str(used["tokens"]),
        _usd(used["cost_cents"], "0.0001"),
        str(status["percentage_used"]),
        status["reset_time"].isoformat() if status.get("reset_time") else "",
    ]


def _statuses(
    read: Callable[[int, datetime], list[dict]], owner_ids: set[int], now: datetime
) -> dict[tuple[int, str, int], dict]:
    """(owner, set_by, cap id) -> its status, for every owner; empty when the store is down."""
    found = {}
    try:
        for owner in sorted(owner_ids):
            for status in read(owner, now):
                found[(owner, status["set_by"], status["id"])] = status
    except CapStoreUnavailable:
        return {}
    return found


def caps_export_csv(*, now: datetime | None = None) -> str:
    """Every active cap as CSV — users' (administrator and own), teams', the policy — with its
    use in the current window; the import's columns first."""
    now = now or clock.now()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    user_caps = list(
        UserCapConfig.objects.filter(is_active=True)
        .select_related("user")
        .order_by("user__email", "cap_type", "set_by")
    )
    statuses = _statuses(
        lambda user_id, at: cap_status(user_id=user_id, now=at),
        {cap.user_id for cap in user_caps},
        now,
    )
    for cap in user_caps:
        status = statuses.get((cap.user_id, cap.set_by, cap.pk))
        writer.writerow(
            [
                _formula_safe(cap.user.email),
                cap.cap_type,
                *_limit_cells(cap),
                cap.set_by,
                *_use_cells(status),
            ]
        )
    team_caps = list(
        TeamCapConfig.objects.filter(is_active=True)
        .select_related("team")
        .order_by("team__name", "cap_type")
    )
    statuses = _statuses(
        lambda team_id, at: team_cap_status(team_id=team_id, now=at),
        {cap.team_id for cap in team_caps},
        now,
    )
    for cap in team_caps:
        status = statuses.get((cap.team_id, "team", cap.pk))
        writer.writerow(
            [
                _formula_safe(f"{TEAM_PREFIX}{cap.team.name}"),
                cap.cap_type,
                *_limit_cells(cap),
                "team",
                *_use_cells(status),
            ]
        )
    for policy in CapPolicy.objects.order_by("id"):
        if any(getattr(policy, name) is not None for name in Limits.__dataclass_fields__):
            writer.writerow(
                [
                    POLICY_SUBJECT,
                    policy.cap_type,
                    *_limit_cells(policy),
                    "policy",
                    *_use_cells(None),
                ]
            )
    return out.getvalue()
