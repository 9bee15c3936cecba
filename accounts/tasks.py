"""Celery tasks of the accounts app: thin wrappers over its services (schedules in beat's DB)."""

from celery import shared_task

from accounts import offboarding


@shared_task(name="accounts.refresh_identities")
def refresh_identities() -> dict:
    """Hourly: ask the identity provider about every active user; offboard who it forgot."""
    return offboarding.identities_refresh()
