"""`manage.py rebuildusage --from DATE --to DATE`: recompute summaries and counters from records."""

from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from usage.services import RetentionError, usage_rebuild


def _moment(text: str, *, end: bool) -> datetime:
    # A bare date first: parse_datetime would take "2026-11-25" as midnight.
    try:
        day = parse_date(text)
        moment = None if day else parse_datetime(text)
    except ValueError:
        day = moment = None
    if moment is not None:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if day is None:
        raise CommandError(f"{text!r} is not an ISO date or datetime")
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    # A bare date as the end includes that whole day.
    return start + timedelta(days=1) if end else start


class Command(BaseCommand):
    help = (
        "Recompute hourly/daily/weekly/monthly usage summaries and the live hourly counters "
        "from the usage records for a range (after losing the counter store, say)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--from", dest="start", required=True, help="ISO date or datetime")
        parser.add_argument(
            "--to", dest="end", required=True, help="ISO date (inclusive) or datetime"
        )

    def handle(self, *args, start: str, end: str, **options) -> None:
        begin, finish = _moment(start, end=False), _moment(end, end=True)
        if finish <= begin:
            raise CommandError("--to must be after --from")
        try:
            result = usage_rebuild(start=begin, end=finish)
        except RetentionError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"rebuilt {begin:%Y-%m-%dT%H:%M}..{finish:%Y-%m-%dT%H:%M}: "
            f"{result.hourly_rows} hourly rows, {result.rollup_rows} rollup rows, "
            f"{result.live_keys} live counters"
        )
