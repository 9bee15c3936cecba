"""Celery tasks of the accounts app: thin wrappers over its services (schedules in beat's DB)."""

from celery import shared_task

from accounts import device, offboarding


@shared_task(name="accounts.refresh_identities")
def refresh_identities() -> dict:
    """Hourly: ask the identity provider about every active user; offboard who it forgot."""
    return offboarding.identities_refresh()


@shared_task(name="accounts.purge_device_authorizations")
def purge_device_authorizations() -> int:
    """Daily: device sign-in requests expired more than a day ago."""
    return device.device_authorizations_purge()
