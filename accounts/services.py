"""Accounts: API keys, JWTs, sign-in rules, revocation and the audit trail.

Authentication of a credential (``api_key_authenticate``, ``jwt_authenticate`` and their async
twins) is the proxy's hot path; see ``accounts.credential_cache`` for how a warm one costs no
database query on Redis and one single-row read on the embedded store.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest
from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.credential_cache import (
    CredentialCacheUnavailable,
    credentials_invalidate,
    device_entry_name,
    get_credential_cache,
    key_entry_name,
    user_entry_name,
)
from accounts.models import ApiKey, AuditEvent, DeviceToken, Team, User
from config import clock
from config.db import in_db_thread

logger = logging.getLogger(__name__)

_ALPHABET = string.ascii_letters + string.digits
KEY_BODY_LENGTH = 32
# last_used_at is written at most once per this many seconds per key (and process).
LAST_USED_RESOLUTION_SECONDS = 60
GENERIC_AUTH_FAILURE = "Invalid or missing credentials."
TOKEN_GENERATION_CLAIM = "tgen"  # noqa: S105 - a claim name, not a secret


class AuthFailed(Exception):
    """Authentication failed; the message is the same whatever the reason."""

    def __init__(self, reason: str = "", *, expired: bool = False) -> None:
        # The reason is for logs and tests' debugging only, never for the client.
        super().__init__(GENERIC_AUTH_FAILURE)
        self.reason = reason
        # A genuine credential past its expiry: not counted by the failed-credential throttle.
        self.expired = expired


@dataclass(frozen=True)
class Principal:
    """Who made a request, as the proxy and the management API see it."""

    user_id: int
    email: str
    is_admin: bool
    api_key_id: int | None  # None when authenticated by JWT or a device token
    auth_kind: str  # "api_key", "jwt" or "device"
    device_id: int | None = None  # the device (accounts.device) of a device token
    team_id: int | None = None  # the user's team (cost centre) when authenticated


@dataclass(frozen=True)
class CreatedKey:
    api_key: ApiKey
    raw: str  # shown to the user once, never stored


@dataclass(frozen=True)
class Origin:
    """Where a request came from, for the audit trail."""

    ip: str | None = None
    user_agent: str = ""

    @classmethod
    def of(cls, request: HttpRequest | None) -> Origin:
        if request is None:
            return cls()
        # REMOTE_ADDR only: X-Forwarded-For is trivially forged unless a trusted proxy sets it.
        return cls(
            ip=request.META.get("REMOTE_ADDR") or None,
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
        )


# --- Audit ------------------------------------------------------------------------------------


def audit_record(
    *,
    action: str,
    actor: User | None = None,
    target: str = "",
    origin: Origin | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the audit trail (login.success, key.create, token.revoke, ...)."""
    origin = origin or Origin()
    return AuditEvent.objects.create(
        actor=actor if actor is not None and actor.pk else None,
        action=action,
        target=target[:255],
        ip=origin.ip,
        user_agent=origin.user_agent,
        detail=detail or {},
    )


# --- API keys ---------------------------------------------------------------------------------


def api_key_hash_version() -> int:
    """The version new keys are hashed with: the first of `auth.api_key_hash_keys`."""
    return len(settings.GATEWAY.auth.api_key_hash_keys) or 1


def _hash_secret(version: int) -> bytes:
    """The secret of a hash version: position from the end of the list; 1 = the secret key."""
    keys = settings.GATEWAY.auth.api_key_hash_keys
    if not keys:
        if version != 1:
            raise AuthFailed("unknown hash version")
        return settings.SECRET_KEY.encode()
    if not 1 <= version <= len(keys):
        raise AuthFailed("unknown hash version")
    return keys[len(keys) - version].encode()


def _version_of(raw: str) -> int:
    """The hash version a key carries: `<prefix>v<N>_...` for N >= 2, none (1) otherwise.

    A key of version 1 has letters and digits only after its prefix, so it never looks tagged.
    """
    body = raw[len(settings.GATEWAY.auth.api_key_prefix) :]
    if body[:1] == "v":
        tag, sep, _ = body.partition("_")
        if sep and tag[1:].isdigit() and len(tag) <= 4:
            return int(tag[1:])
    return 1


def api_key_hash(raw: str) -> str:
    """Keyed hash of a key with the secret of its own version: one HMAC, whatever the list.

    Keys are high-entropy, so a fast HMAC is the right tool. AuthFailed for a version that no
    configured secret has.
    """
    return hmac.new(_hash_secret(_version_of(raw)), raw.encode(), hashlib.sha256).hexdigest()


class ApiKeyLifetimeError(ValueError):
    """A requested expiry beyond `auth.api_key_max_lifetime_days`."""


def api_key_expiry(expires_at: datetime | None, *, now: datetime | None = None) -> datetime | None:
    """The expiry a new key gets: the requested one within the maximum lifetime, else the
    default lifetime (`auth.api_key_default_lifetime_days`); None = never expires."""
    auth = settings.GATEWAY.auth
    now = now or clock.now()
    if expires_at is None and auth.api_key_default_lifetime_days is not None:
        expires_at = now + timedelta(days=auth.api_key_default_lifetime_days)
    if auth.api_key_max_lifetime_days is not None:
        latest = now + timedelta(days=auth.api_key_max_lifetime_days)
        if expires_at is None:
            expires_at = latest
        elif expires_at > latest:
            raise ApiKeyLifetimeError(
                f"Keys may live {auth.api_key_max_lifetime_days:g} days at most: "
                f"expire on or before {latest:%Y-%m-%dT%H:%M:%SZ}."
            )
    return expires_at


def api_key_create(
    *,
    user: User,
    name: str,
    expires_at: datetime | None = None,
    origin: Origin | None = None,
    actor: User | None = None,
) -> CreatedKey:
    """Create a key for `user`; the returned raw key is the only copy of the secret.

    The expiry follows the configured lifetimes (ApiKeyLifetimeError beyond the maximum).
    `actor` is who created it when not the owner (an administrator acting for them).
    """
    expires_at = api_key_expiry(expires_at)
    prefix = settings.GATEWAY.auth.api_key_prefix
    version = api_key_hash_version()
    tagged = prefix if version == 1 else f"{prefix}v{version}_"
    raw = tagged + "".join(secrets.choice(_ALPHABET) for _ in range(KEY_BODY_LENGTH))
    api_key = ApiKey.objects.create(
        user=user,
        name=name,
        prefix=raw[: len(tagged) + 4],
        last_four=raw[-4:],
        key_hash=api_key_hash(raw),
        hash_version=version,
        expires_at=expires_at,
    )
    detail = {"hint": api_key.hint, "name": name, "owner": user.email}
    if actor is not None and actor.pk != user.pk:
        detail["on_behalf_of"] = user.email
    audit_record(
        action="key.create",
        actor=actor or user,
        target=f"key:{api_key.pk}",
        origin=origin,
        detail=detail,
    )
    return CreatedKey(api_key=api_key, raw=raw)


def api_key_revoke(
    *, api_key: ApiKey, actor: User | None = None, origin: Origin | None = None
) -> None:
    """Revoke a key at once, in every process."""
    if api_key.revoked_at is None:
        api_key.revoked_at = clock.now()
        api_key.save(update_fields=["revoked_at"])
        audit_record(
            action="key.revoke",
            actor=actor,
            target=f"key:{api_key.pk}",
            origin=origin,
            detail={"hint": api_key.hint, "owner_id": api_key.user_id},
        )
    credentials_invalidate([key_entry_name(api_key.key_hash)])


def _entry_ttl(entry: dict[str, Any]) -> int:
    """Seconds an entry may still live: bounded so that a missed invalidation heals itself."""
    limit = settings.GATEWAY.auth.credential_cache_seconds
    return max(1, int(entry["loaded_at"] + limit - clock.timestamp()))


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value else None


def _key_entry_load(key_hash: str) -> dict[str, Any]:
    """Read a key and its owner from the database into a cache entry; AuthFailed if unusable."""
    cache = get_credential_cache()
    generation = cache.generation()  # before the rows: see credential_cache
    row = (
        ApiKey.objects.filter(key_hash=key_hash)
        .values(
            "id",
            "user_id",
            "revoked_at",
            "expires_at",
            "last_used_at",
            "user__email",
            "user__is_active",
            "user__is_superuser",
            "user__team_id",
        )
        .first()
    )
    if row is None:
        raise AuthFailed("unknown key")
    if row["revoked_at"] is not None:
        raise AuthFailed("revoked key")
    if row["expires_at"] is not None and row["expires_at"] <= clock.now():
        raise AuthFailed("expired key", expired=True)
    if not row["user__is_active"]:
        raise AuthFailed("inactive user")
    entry = {
        "user_id": row["user_id"],
        "email": row["user__email"],
        "is_admin": row["user__is_superuser"],
        "team_id": row["user__team_id"],
        "key_id": row["id"],
        "expires_at": _epoch(row["expires_at"]),
        "last_used_at": _epoch(row["last_used_at"]),
        "loaded_at": clock.timestamp(),
        "gen": generation,
    }
    cache.set_unless_moved(key_entry_name(key_hash), entry, _entry_ttl(entry))
    return entry


def _key_touch(key_hash: str, entry: dict[str, Any], now: float) -> None:
    """Record use, at most once per LAST_USED_RESOLUTION_SECONDS (no write per request)."""
    ApiKey.objects.filter(pk=entry["key_id"]).update(
        last_used_at=datetime.fromtimestamp(now, tz=UTC)
    )
    touched = {**entry, "last_used_at": now}
    get_credential_cache().set_unless_moved(key_entry_name(key_hash), touched, _entry_ttl(touched))


def _key_check(key_hash: str, entry: dict[str, Any], now: float) -> Principal:
    if entry["expires_at"] is not None and entry["expires_at"] <= now:
        with contextlib.suppress(CredentialCacheUnavailable):
            # Best effort: every hit checks the expiry anyway.
            get_credential_cache().delete([key_entry_name(key_hash)])
        raise AuthFailed("expired key", expired=True)
    return Principal(
        user_id=entry["user_id"],
        email=entry["email"],
        is_admin=entry["is_admin"],
        api_key_id=entry["key_id"],
        auth_kind="api_key",
        team_id=entry.get("team_id"),
    )


def _needs_touch(entry: dict[str, Any], now: float) -> bool:
    last = entry["last_used_at"]
    return last is None or now - last >= LAST_USED_RESOLUTION_SECONDS


def _cached_entry(name: str, load: Callable[[Any], dict[str, Any]], arg: Any) -> dict[str, Any]:
    """A credential's cache entry, reloaded by `load(arg)` when missing or stale."""
    cache = get_credential_cache()
    entry = cache.get(name)
    if entry is not None and cache.checks_generation_on_hit and entry["gen"] != cache.generation():
        entry = None
    return entry if entry is not None else load(arg)


async def _acached_entry(
    name: str, load: Callable[[Any], dict[str, Any]], arg: Any
) -> dict[str, Any]:
    """Async twin of _cached_entry: the ORM only on a miss, in a thread."""
    cache = get_credential_cache()
    entry = await cache.aget(name)
    if (
        entry is not None
        and cache.checks_generation_on_hit
        and entry["gen"] != await cache.ageneration()
    ):
        entry = None
    return entry if entry is not None else await in_db_thread(load, arg)


def api_key_authenticate(*, raw: str) -> Principal:
    """The principal of an API key; AuthFailed for unknown, revoked or expired keys."""
    key_hash = api_key_hash(raw)
    entry = _cached_entry(key_entry_name(key_hash), _key_entry_load, key_hash)
    now = clock.timestamp()
    principal = _key_check(key_hash, entry, now)
    if _needs_touch(entry, now):
        _key_touch(key_hash, entry, now)
    return principal


async def aapi_key_authenticate(*, raw: str) -> Principal:
    """Async twin of api_key_authenticate: the ORM only on a miss, in a thread."""
    key_hash = api_key_hash(raw)
    entry = await _acached_entry(key_entry_name(key_hash), _key_entry_load, key_hash)
    now = clock.timestamp()
    principal = _key_check(key_hash, entry, now)
    if _needs_touch(entry, now):
        await in_db_thread(_key_touch, key_hash, entry, now)
    return principal


# --- JWT --------------------------------------------------------------------------------------


def token_pair_create(*, user: User) -> dict[str, str]:
    """A fresh access + refresh pair for `user`, with the gateway's claims."""
    refresh = RefreshToken.for_user(user)  # recorded as outstanding, so sign-out can revoke it
    refresh["email"] = user.email
    refresh["is_admin"] = user.is_admin
    refresh[TOKEN_GENERATION_CLAIM] = user.token_generation
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def token_refresh(*, refresh: str) -> dict[str, str]:
    """Rotate a refresh token: the used one is blacklisted, and only one concurrent use wins."""
    try:
        token = RefreshToken(refresh)  # type: ignore[arg-type]  # a raw token; signature, expiry, type and blacklist
    except TokenError as exc:
        raise AuthFailed(f"bad refresh token: {exc}") from None
    user = User.objects.filter(pk=_claim_user_id(token.payload)).first()
    if user is None or not user.is_active:
        raise AuthFailed("no active user")
    if token.payload.get(TOKEN_GENERATION_CLAIM) != user.token_generation:
        raise AuthFailed("refresh token issued before sign-out")
    jti = token.payload[jwt_settings.JTI_CLAIM]
    try:
        with transaction.atomic():
            outstanding, _ = OutstandingToken.objects.get_or_create(
                jti=jti,
                defaults={
                    "user": user,
                    "token": refresh,
                    "created_at": clock.now(),
                    "expires_at": datetime.fromtimestamp(token.payload["exp"], tz=UTC),
                },
            )
            _, created = BlacklistedToken.objects.get_or_create(token=outstanding)
    except IntegrityError:
        created = False
    if not created:
        raise AuthFailed("refresh token already used")
    return token_pair_create(user=user)


def _claim_user_id(payload: dict[str, Any]) -> int:
    try:
        return int(payload[jwt_settings.USER_ID_CLAIM])
    except (KeyError, TypeError, ValueError):
        raise AuthFailed("no user id claim") from None


def _access_claims(raw: str) -> tuple[int, Any]:
    try:
        token = AccessToken(raw)  # type: ignore[arg-type]  # a raw token; signature, expiry and token type ("access")
    except TokenError as exc:
        # Expired is only said of a token whose signature verified: a genuine one.
        expired = isinstance(exc, ExpiredTokenError)
        raise AuthFailed(f"bad access token: {exc}", expired=expired) from None
    return _claim_user_id(token.payload), token.payload.get(TOKEN_GENERATION_CLAIM)


def _user_entry_load(user_id: int) -> dict[str, Any]:
    cache = get_credential_cache()
    generation = cache.generation()
    row = (
        User.objects.filter(pk=user_id)
        .values("email", "is_active", "is_superuser", "token_generation", "team_id")
        .first()
    )
    if row is None:
        raise AuthFailed("unknown user")
    entry = {
        "email": row["email"],
        "is_active": row["is_active"],
        "is_admin": row["is_superuser"],
        "token_generation": row["token_generation"],
        "team_id": row["team_id"],
        "loaded_at": clock.timestamp(),
        "gen": generation,
    }
    cache.set_unless_moved(user_entry_name(user_id), entry, _entry_ttl(entry))
    return entry


def _jwt_check(user_id: int, token_generation: Any, entry: dict[str, Any]) -> Principal:
    if not entry["is_active"]:
        raise AuthFailed("inactive user")
    if token_generation != entry["token_generation"]:
        raise AuthFailed("token issued before sign-out")
    return Principal(
        user_id=user_id,
        email=entry["email"],
        is_admin=entry["is_admin"],
        api_key_id=None,
        auth_kind="jwt",
        team_id=entry.get("team_id"),
    )


def jwt_authenticate(*, raw: str) -> Principal:
    """The principal of an access token; AuthFailed if invalid, expired or revoked."""
    user_id, token_generation = _access_claims(raw)
    entry = _cached_entry(user_entry_name(user_id), _user_entry_load, user_id)
    return _jwt_check(user_id, token_generation, entry)


async def ajwt_authenticate(*, raw: str) -> Principal:
    """Async twin of jwt_authenticate."""
    user_id, token_generation = _access_claims(raw)
    entry = await _acached_entry(user_entry_name(user_id), _user_entry_load, user_id)
    return _jwt_check(user_id, token_generation, entry)


# --- Users ------------------------------------------------------------------------------------


def user_credentials_invalidate(*, user_id: int) -> None:
    """Forget every cached credential of a user (after deactivation, flag or e-mail changes)."""
    hashes = ApiKey.objects.filter(user_id=user_id).values_list("key_hash", flat=True)
    device_hashes = DeviceToken.objects.filter(
        device__user_id=user_id, expires_at__gt=clock.now()
    ).values_list("token_hash", flat=True)
    credentials_invalidate(
        [
            user_entry_name(user_id),
            *(key_entry_name(h) for h in hashes),
            *(device_entry_name(h) for h in device_hashes),
        ]
    )


def user_tokens_revoke(
    *, user: User, actor: User | None = None, origin: Origin | None = None
) -> int:
    """Revoke every JWT of `user`: refresh tokens blacklisted, older access tokens rejected."""
    User.objects.filter(pk=user.pk).update(token_generation=F("token_generation") + 1)
    user.refresh_from_db(fields=["token_generation"])
    pending = OutstandingToken.objects.filter(
        user=user, expires_at__gt=clock.now(), blacklistedtoken__isnull=True
    )
    revoked = BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in pending], ignore_conflicts=True
    )
    credentials_invalidate([user_entry_name(user.pk)])
    audit_record(
        action="token.revoke",
        actor=actor or user,
        target=f"user:{user.pk}",
        origin=origin,
        detail={"refresh_tokens": len(revoked)},
    )
    return len(revoked)


def user_team_set(*, user: User, team: Team | None) -> bool:
    """Move a user into `team` (None: out of any); True if it changed. Cached credentials
    carry the team, so they are forgotten: the next call reserves against the new team."""
    if user.team_id == (team.pk if team else None):
        return False
    user.team = team
    user.save(update_fields=["team"])
    user_credentials_invalidate(user_id=user.pk)
    return True


def groups_of(claims: dict[str, Any]) -> list[str] | None:
    """The `groups` claim as a list of names; None when the provider sent none."""
    groups = claims.get("groups")
    if isinstance(groups, str):
        return [groups]  # some providers send a single group as a string
    if isinstance(groups, list):
        return [str(g) for g in groups if isinstance(g, str | int)]
    return None


def user_team_from_groups(*, user: User, groups: list[str]) -> bool:
    """Apply `auth.team_groups` to the groups the identity provider sent at sign-in; True if
    the user's team changed.

    The first group (in the provider's order) that is listed decides the team, created by name
    when missing. In none of the listed groups: a user whose team is one of the listed teams
    leaves it (those teams follow the provider, which has taken them out of the group); a user
    in another team stays there (an administrator placed them by hand).
    """
    # Group names compare without case: GitHub's org and team names ignore it.
    mapping = {group.lower(): name for group, name in settings.GATEWAY.auth.team_groups.items()}
    if not mapping:
        return False
    team = None
    for group in groups:
        if group.lower() in mapping:
            team, _ = Team.objects.get_or_create(name=mapping[group.lower()])
            break
    if team is None and (user.team is None or user.team.name not in set(mapping.values())):
        return False
    before = user.team.name if user.team else None
    changed = user_team_set(user=user, team=team)
    if changed:
        audit_record(
            action="user.team",
            target=f"user:{user.pk}",
            detail={
                "email": user.email,
                "from": before,
                "to": team.name if team else None,
                "source": "auth.team_groups",
            },
        )
    return changed


def user_deactivate(*, user: User, actor: User | None = None, origin: Origin | None = None) -> None:
    """Deactivate a user: their keys and tokens stop working at once."""
    if user.is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])
        audit_record(action="user.deactivate", actor=actor, target=f"user:{user.pk}", origin=origin)
    user_credentials_invalidate(user_id=user.pk)


def email_domain_allowed(email: str) -> bool:
    """Whether `auth.allowed_email_domains` (empty: any) lets this e-mail sign in."""
    allowed = {d.lower().lstrip("@") for d in settings.GATEWAY.auth.allowed_email_domains}
    if not allowed:
        return True
    return email.rpartition("@")[2].lower() in allowed


def user_admin_flag_apply(*, user: User, listed_only: bool = False) -> bool:
    """Apply `auth.admin_emails` at sign-in; True if the flag changed.

    Listed e-mails get is_staff and is_superuser. The flag is removed again only if it came
    from the list (`admin_from_config`) and the e-mail is no longer listed: an administrator
    made by createsuperuser or by hand in Django admin is never demoted by configuration.
    With `listed_only` (demo accounts) an unlisted e-mail loses the flag whatever gave it.
    """
    listed = user.email.lower() in {e.strip().lower() for e in settings.GATEWAY.auth.admin_emails}
    changed = False
    if listed and not (user.is_staff and user.is_superuser):
        user.is_staff = user.is_superuser = True
        user.admin_from_config = True
        changed = True
    elif not listed and (
        user.admin_from_config or (listed_only and (user.is_staff or user.is_superuser))
    ):
        user.is_staff = user.is_superuser = False
        user.admin_from_config = False
        changed = True
    if changed and user.pk:
        user.save(update_fields=["is_staff", "is_superuser", "admin_from_config"])
        user_credentials_invalidate(user_id=user.pk)
        audit_record(
            action="user.admin_grant" if listed else "user.admin_revoke",
            target=f"user:{user.pk}",
            detail={"email": user.email, "source": "auth.admin_emails"},
        )
    return changed


@transaction.atomic
def user_get_or_create(*, email: str, admin: bool = False) -> User:
    """The user with this e-mail, created if needed; `admin` grants (never removes) the flag."""
    email = email.strip().lower()
    user, _ = User.objects.get_or_create(email=email, defaults={"username": email})
    if admin and not (user.is_staff and user.is_superuser):
        # Both flags: is_superuser is the gateway's admin, is_staff opens Django's admin site.
        user.is_staff = user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
        user_credentials_invalidate(user_id=user.pk)
    return user
