"""Celery tasks of the usage app: thin wrappers over usage.services (schedules in beat's DB)."""

from datetime import datetime

from celery import shared_task

from usage import services


@shared_task(name="usage.persist_hours")
def persist_hours() -> int:
    return services.summary_persist_hours()


@shared_task(name="usage.rollup")
def rollup(period: str, start: str | None = None) -> int:
    """Roll up `period` at ISO `start`, or the last completed window when none is given."""
    if start is None:
        return services.summary_rollup_previous(period=period)
    return services.summary_rollup(period=period, start=datetime.fromisoformat(start))


@shared_task(name="usage.sweep_counters")
def sweep_counters() -> int:
    return services.counters_sweep()


@shared_task(name="usage.rebuild")
def rebuild(start: str, end: str) -> dict:
    """Rebuild summaries and live counters of [start, end) (ISO datetimes) from the records."""
    result = services.usage_rebuild(
        start=datetime.fromisoformat(start), end=datetime.fromisoformat(end)
    )
    return {
        "hourly_rows": result.hourly_rows,
        "rollup_rows": result.rollup_rows,
        "live_keys": result.live_keys,
    }


@shared_task(name="usage.purge_records")
def purge_records() -> int:
    """Delete the records past `usage.retention_days` whose summaries are written."""
    return services.records_purge()
