"""Device sign-in (RFC 8628): a CLI gets gateway tokens by a person approving it in a browser.

1. The device asks (``device_authorization_create``): a long random device code for it, a short
   user code (``XXXX-XXXX``) for the person. Both are stored as keyed hashes only.
2. A signed-in person enters the user code at ``/device`` and approves or denies
   (``device_authorization_decide``).
3. The device polls (``device_token_exchange``) and, once approved, gets an access token
   (``SSOD_…``, ``auth.device_token_lifetime_seconds``) and a refresh token (``SSODR_…``,
   ``auth.device_refresh_lifetime_days``, rotated on every use: the used one stops working).

An access token is verified like an API key (``device_token_authenticate``): one HMAC, then the
credential cache, so a warm one costs no database query on Redis and one single-row read on the
embedded store. Revoking the device (or deactivating its user) deletes its cache entries and
moves the generation, so its tokens stop at once in every process. Signing out of the dashboard
leaves devices alone; ``logout_everywhere`` revokes them with sessions and JWTs.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F

from accounts.credential_cache import (
    CredentialCacheUnavailable,
    credentials_invalidate,
    device_entry_name,
    get_credential_cache,
)
from accounts.models import Device, DeviceAuthorization, DeviceToken, User
from accounts.services import (
    LAST_USED_RESOLUTION_SECONDS,
    AuthFailed,
    Origin,
    Principal,
    _acached_entry,
    _cached_entry,
    _entry_ttl,
    _epoch,
    _hash_secret,
    api_key_hash_version,
    audit_record,
    user_tokens_revoke,
)
from config import clock
from config.db import in_db_thread

ACCESS_PREFIX = "SSOD_"  # a prefix, not a secret
REFRESH_PREFIX = "SSODR_"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# RFC 8628 §6.1: 20 consonants, no vowels (no words), nothing that reads like another letter.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
DEVICE_CODE_SECONDS = 600
POLL_INTERVAL = 5
SLOW_DOWN_STEP = 5  # RFC 8628 §3.5: each slow_down adds 5 s to the interval
_TOKEN_ALPHABET = string.ascii_letters + string.digits
TOKEN_BODY_LENGTH = 40
MAX_FIELD = 200


class DeviceFlowError(Exception):
    """An RFC 6749 §5.2 / RFC 8628 §3.5 error: ``error`` is the code, the message the text."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class CreatedAuthorization:
    authorization: DeviceAuthorization
    device_code: str
    user_code: str  # as shown: XXXX-XXXX


@dataclass(frozen=True)
class IssuedTokens:
    device: Device
    access_token: str
    refresh_token: str
    expires_in: int

    def as_response(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


# --- Codes and hashes -------------------------------------------------------------------------


def _hash(raw: str, version: int = 1) -> str:
    return hmac.new(_hash_secret(version), raw.encode(), hashlib.sha256).hexdigest()


def _random(length: int) -> str:
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))


def user_code_normalize(value: str) -> str:
    """What a person typed, as stored: capitals, no dashes or spaces."""
    return "".join(c for c in value.upper() if c.isalnum())


def user_code_display(code: str) -> str:
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"


def _user_code_hash(value: str) -> str:
    return _hash("user-code:" + user_code_normalize(value))


def _device_code_hash(value: str) -> str:
    return _hash("device-code:" + value)


def _token_version(raw: str, prefix: str) -> int:
    """The hash version a token carries (``SSOD_v2_…``), like an API key; 1 when none."""
    body = raw[len(prefix) :]
    if body[:1] == "v":
        tag, sep, _ = body.partition("_")
        if sep and tag[1:].isdigit() and len(tag) <= 4:
            return int(tag[1:])
    return 1


def _new_token(prefix: str) -> tuple[str, str, int]:
    """(raw token, its hash, its hash version), tagged like an API key when version >= 2."""
    version = api_key_hash_version()
    tagged = prefix if version == 1 else f"{prefix}v{version}_"
    raw = tagged + _random(TOKEN_BODY_LENGTH)
    return raw, _hash(raw, version), version


def token_hash(raw: str, prefix: str = ACCESS_PREFIX) -> str:
    """The keyed hash of a device access (or refresh) token; AuthFailed for an unknown version."""
    return _hash(raw, _token_version(raw, prefix))


def is_device_token(credential: str) -> bool:
    return credential.startswith(ACCESS_PREFIX)


def _clip(value: Any) -> str:
    return str(value or "").strip()[:MAX_FIELD]


# --- 1. The device asks -----------------------------------------------------------------------


def device_authorization_create(
    *, client_id: str, device_name: str = "", origin: Origin | None = None
) -> CreatedAuthorization:
    """A new device code and user code (the raw codes are returned once, never stored)."""
    origin = origin or Origin()
    now = clock.now()
    device_code = _random(43)
    for _ in range(5):  # a user code collision is rare (20^8 codes): draw again
        user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
        if not DeviceAuthorization.objects.filter(
            user_code_hash=_user_code_hash(user_code)
        ).exists():
            break
    authorization = DeviceAuthorization.objects.create(
        device_code_hash=_device_code_hash(device_code),
        user_code_hash=_user_code_hash(user_code),
        client_id=_clip(client_id),
        device_name=_clip(device_name),
        ip=origin.ip,
        user_agent=origin.user_agent,
        created_at=now,
        expires_at=now + timedelta(seconds=DEVICE_CODE_SECONDS),
        interval=POLL_INTERVAL,
    )
    return CreatedAuthorization(authorization, device_code, user_code_display(user_code))


def device_authorizations_purge(*, now: datetime | None = None) -> int:
    """Delete authorizations that expired more than a day ago (they only serve the audit)."""
    cutoff = (now or clock.now()) - timedelta(days=1)
    deleted, _ = DeviceAuthorization.objects.filter(expires_at__lt=cutoff).delete()
    return deleted


# --- 2. A person decides ----------------------------------------------------------------------


def device_authorization_pending(user_code: str) -> DeviceAuthorization | None:
    """The pending, unexpired authorization with this user code, or None."""
    if not user_code_normalize(user_code):
        return None
    return DeviceAuthorization.objects.filter(
        user_code_hash=_user_code_hash(user_code),
        status=DeviceAuthorization.PENDING,
        expires_at__gt=clock.now(),
    ).first()


def device_authorization_decide(
    *, authorization_id: int, user: User, approve: bool, origin: Origin | None = None
) -> DeviceAuthorization | None:
    """Approve or deny a pending authorization as `user`; None if no longer pending."""
    with transaction.atomic():
        authorization = (
            DeviceAuthorization.objects.select_for_update()
            .filter(
                pk=authorization_id,
                status=DeviceAuthorization.PENDING,
                expires_at__gt=clock.now(),
            )
            .first()
        )
        if authorization is None or not user.is_active:
            return None
        authorization.status = (
            DeviceAuthorization.APPROVED if approve else DeviceAuthorization.DENIED
        )
        authorization.user = user
        authorization.decided_at = clock.now()
        authorization.save(update_fields=["status", "user", "decided_at"])
        audit_record(
            action="device.approve" if approve else "device.deny",
            actor=user,
            target=f"device-authorization:{authorization.pk}",
            origin=origin,
            detail={
                "client_id": authorization.client_id,
                "device_name": authorization.device_name,
                "device_ip": authorization.ip,
                "device_user_agent": authorization.user_agent,
            },
        )
    return authorization


# --- 3. The device polls, then refreshes ------------------------------------------------------


def _access_token_issue(device: Device, now: datetime) -> tuple[str, int]:
    lifetime = settings.GATEWAY.auth.device_token_lifetime_seconds
    raw, hashed, version = _new_token(ACCESS_PREFIX)
    DeviceToken.objects.create(
        device=device,
        token_hash=hashed,
        hash_version=version,
        created_at=now,
        expires_at=now + timedelta(seconds=lifetime),
    )
    return raw, lifetime


def _refresh_expiry(now: datetime) -> datetime:
    return now + timedelta(days=settings.GATEWAY.auth.device_refresh_lifetime_days)


def device_token_exchange(*, device_code: str, client_id: str) -> IssuedTokens:
    """Poll with a device code: tokens once approved, else DeviceFlowError (RFC 8628 §3.5)."""
    now = clock.now()
    with transaction.atomic():
        authorization = (
            DeviceAuthorization.objects.select_for_update()
            .filter(device_code_hash=_device_code_hash(device_code))
            .first()
        )
        if authorization is None or authorization.client_id != _clip(client_id):
            raise DeviceFlowError("invalid_grant", "Unknown device code.")
        if authorization.status == DeviceAuthorization.CONSUMED:
            raise DeviceFlowError("invalid_grant", "This device code has already been used.")
        if authorization.expires_at <= now:
            raise DeviceFlowError("expired_token", "The device code has expired: start again.")
        if authorization.status == DeviceAuthorization.DENIED:
            raise DeviceFlowError("access_denied", "The request was denied.")
        if authorization.status == DeviceAuthorization.PENDING:
            # Saved before the error leaves the transaction (raising inside would roll it back).
            pending = _poll_pending(authorization, now)
        else:
            pending = None
            issued = _exchange_approved(authorization, now)
    if pending is not None:
        raise pending
    return issued


def _poll_pending(authorization: DeviceAuthorization, now: datetime) -> DeviceFlowError:
    """Record a poll of a pending authorization; the error it answers (slow_down or pending)."""
    last = authorization.last_polled_at
    authorization.last_polled_at = now
    if last is not None and (now - last).total_seconds() < authorization.interval:
        authorization.interval += SLOW_DOWN_STEP
        authorization.save(update_fields=["last_polled_at", "interval"])
        return DeviceFlowError("slow_down", f"Polling too fast: wait {authorization.interval} s.")
    authorization.save(update_fields=["last_polled_at"])
    return DeviceFlowError("authorization_pending", "Waiting for approval.")


def _exchange_approved(authorization: DeviceAuthorization, now: datetime) -> IssuedTokens:
    """Tokens for an approved authorization, which is consumed (in the caller's transaction)."""
    user = authorization.user
    if user is None or not user.is_active:
        raise DeviceFlowError("access_denied", "The approving account is not active.")
    refresh, refresh_hash, _ = _new_token(REFRESH_PREFIX)
    device = Device.objects.create(
        user=user,
        name=authorization.device_name or authorization.client_id,
        client_id=authorization.client_id,
        ip=authorization.ip,
        user_agent=authorization.user_agent,
        created_at=now,
        refresh_token_hash=refresh_hash,
        refresh_expires_at=_refresh_expiry(now),
    )
    access, lifetime = _access_token_issue(device, now)
    authorization.status = DeviceAuthorization.CONSUMED
    authorization.device = device
    authorization.save(update_fields=["status", "device"])
    audit_record(
        action="device.create",
        actor=user,
        target=f"device:{device.pk}",
        origin=Origin(ip=device.ip, user_agent=device.user_agent),
        detail={"name": device.name, "client_id": device.client_id},
    )
    return IssuedTokens(device, access, refresh, lifetime)


def device_token_refresh(*, refresh_token: str, client_id: str) -> IssuedTokens:
    """Rotate a refresh token: a new access + refresh pair; the used refresh token is dead.

    Only one of two concurrent uses of the same refresh token wins (a conditional update)."""
    now = clock.now()
    invalid = DeviceFlowError("invalid_grant", "Unknown, used, expired or revoked refresh token.")
    if not refresh_token.startswith(REFRESH_PREFIX):
        raise invalid
    try:
        old_hash = token_hash(refresh_token, REFRESH_PREFIX)
    except AuthFailed:
        raise invalid from None
    with transaction.atomic():
        device = (
            Device.objects.select_related("user")
            .filter(refresh_token_hash=old_hash, revoked_at__isnull=True)
            .first()
        )
        if (
            device is None
            or device.refresh_expires_at <= now
            or not device.user.is_active
            or device.client_id != _clip(client_id)
        ):
            raise invalid
        refresh, new_hash, _ = _new_token(REFRESH_PREFIX)
        moved = Device.objects.filter(
            pk=device.pk, refresh_token_hash=old_hash, revoked_at__isnull=True
        ).update(refresh_token_hash=new_hash, refresh_expires_at=_refresh_expiry(now))
        if not moved:
            raise invalid
        # Tokens long past their expiry serve nobody: keep the table small.
        DeviceToken.objects.filter(device=device, expires_at__lt=now - timedelta(days=1)).delete()
        access, lifetime = _access_token_issue(device, now)
    return IssuedTokens(device, access, refresh, lifetime)


# --- Authentication (the proxy's hot path) ----------------------------------------------------


def _device_entry_load(hashed: str) -> dict[str, Any]:
    cache = get_credential_cache()
    generation = cache.generation()  # before the rows: see credential_cache
    row = (
        DeviceToken.objects.filter(token_hash=hashed)
        .values(
            "expires_at",
            "device_id",
            "device__revoked_at",
            "device__last_used_at",
            "device__user_id",
            "device__user__email",
            "device__user__is_active",
            "device__user__is_superuser",
            "device__user__team_id",
        )
        .first()
    )
    if row is None:
        raise AuthFailed("unknown device token")
    if row["device__revoked_at"] is not None:
        raise AuthFailed("revoked device")
    if row["expires_at"] <= clock.now():
        raise AuthFailed("expired device token", expired=True)
    if not row["device__user__is_active"]:
        raise AuthFailed("inactive user")
    entry = {
        "user_id": row["device__user_id"],
        "email": row["device__user__email"],
        "is_admin": row["device__user__is_superuser"],
        "team_id": row["device__user__team_id"],
        "device_id": row["device_id"],
        "expires_at": _epoch(row["expires_at"]),
        "last_used_at": _epoch(row["device__last_used_at"]),
        "loaded_at": clock.timestamp(),
        "gen": generation,
    }
    cache.set_unless_moved(device_entry_name(hashed), entry, _entry_ttl(entry))
    return entry


def _device_check(hashed: str, entry: dict[str, Any], now: float) -> Principal:
    if entry["expires_at"] <= now:
        with contextlib.suppress(CredentialCacheUnavailable):
            get_credential_cache().delete([device_entry_name(hashed)])
        raise AuthFailed("expired device token", expired=True)
    return Principal(
        user_id=entry["user_id"],
        email=entry["email"],
        is_admin=entry["is_admin"],
        api_key_id=None,
        auth_kind="device",
        device_id=entry["device_id"],
        team_id=entry.get("team_id"),
    )


def _needs_touch(entry: dict[str, Any], now: float) -> bool:
    last = entry["last_used_at"]
    return last is None or now - last >= LAST_USED_RESOLUTION_SECONDS


def _device_touch(hashed: str, entry: dict[str, Any], now: float) -> None:
    Device.objects.filter(pk=entry["device_id"]).update(
        last_used_at=datetime.fromtimestamp(now, tz=UTC)
    )
    touched = {**entry, "last_used_at": now}
    get_credential_cache().set_unless_moved(device_entry_name(hashed), touched, _entry_ttl(touched))


def device_token_authenticate(*, raw: str) -> Principal:
    """The principal of a device access token; AuthFailed if unknown, expired or revoked."""
    hashed = token_hash(raw)
    entry = _cached_entry(device_entry_name(hashed), _device_entry_load, hashed)
    now = clock.timestamp()
    principal = _device_check(hashed, entry, now)
    if _needs_touch(entry, now):
        _device_touch(hashed, entry, now)
    return principal


async def adevice_token_authenticate(*, raw: str) -> Principal:
    """Async twin of device_token_authenticate: the ORM only on a miss, in a thread."""
    hashed = token_hash(raw)
    entry = await _acached_entry(device_entry_name(hashed), _device_entry_load, hashed)
    now = clock.timestamp()
    principal = _device_check(hashed, entry, now)
    if _needs_touch(entry, now):
        await in_db_thread(_device_touch, hashed, entry, now)
    return principal


# --- Revocation -------------------------------------------------------------------------------


def device_entry_names(device_ids: list[int]) -> list[str]:
    """Cache entries of the devices' access tokens that may still be live."""
    hashes = DeviceToken.objects.filter(
        device_id__in=device_ids, expires_at__gt=clock.now()
    ).values_list("token_hash", flat=True)
    return [device_entry_name(h) for h in hashes]


def device_revoke(
    *, device: Device, actor: User | None = None, origin: Origin | None = None
) -> None:
    """Revoke a device: its access tokens and its refresh token stop at once, everywhere."""
    if device.revoked_at is None:
        device.revoked_at = clock.now()
        device.save(update_fields=["revoked_at"])
        audit_record(
            action="device.revoke",
            actor=actor,
            target=f"device:{device.pk}",
            origin=origin,
            detail={"name": device.name, "owner_id": device.user_id},
        )
    credentials_invalidate(device_entry_names([device.pk]))


def user_devices_revoke(
    *, user: User, actor: User | None = None, origin: Origin | None = None
) -> int:
    """Revoke every active device of a user; how many."""
    ids = list(
        Device.objects.filter(user=user, revoked_at__isnull=True).values_list("pk", flat=True)
    )
    if ids:
        Device.objects.filter(pk__in=ids).update(revoked_at=clock.now())
        audit_record(
            action="device.revoke",
            actor=actor or user,
            target=f"user:{user.pk}",
            origin=origin,
            detail={"devices": ids},
        )
    credentials_invalidate(device_entry_names(ids))
    return len(ids)


def logout_everywhere(*, user: User, origin: Origin | None = None) -> None:
    """End every session, JWT and device of `user` (API keys stay: revoke them one by one)."""
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(session_generation=F("session_generation") + 1)
        user.refresh_from_db(fields=["session_generation"])
        user_tokens_revoke(user=user, origin=origin)
        devices = user_devices_revoke(user=user, origin=origin)
        audit_record(
            action="logout.everywhere",
            actor=user,
            target=user.email,
            origin=origin,
            detail={"devices": devices},
        )
