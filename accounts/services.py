"""API keys and users: creation, hashing, revocation."""

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiKey, User

_ALPHABET = string.ascii_letters + string.digits
KEY_BODY_LENGTH = 32


@dataclass(frozen=True)
class CreatedKey:
    api_key: ApiKey
    raw: str  # shown to the user once, never stored


def api_key_hash(raw: str) -> str:
    """Keyed hash of a key: keys are high-entropy, so a fast HMAC is the right tool."""
    secret = settings.SECRET_KEY.encode()
    return hmac.new(secret, raw.encode(), hashlib.sha256).hexdigest()


def api_key_create(*, user: User, name: str, expires_at: datetime | None = None) -> CreatedKey:
    """Create a key for `user`; the returned raw key is the only copy of the secret."""
    prefix = settings.GATEWAY.auth.api_key_prefix
    raw = prefix + "".join(secrets.choice(_ALPHABET) for _ in range(KEY_BODY_LENGTH))
    api_key = ApiKey.objects.create(
        user=user,
        name=name,
        prefix=raw[: len(prefix) + 4],
        last_four=raw[-4:],
        key_hash=api_key_hash(raw),
        expires_at=expires_at,
    )
    return CreatedKey(api_key=api_key, raw=raw)


def api_key_revoke(*, api_key: ApiKey) -> None:
    """Revoke a key at once."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])


@transaction.atomic
def user_get_or_create(*, email: str, admin: bool = False) -> User:
    """The user with this e-mail, created if needed; `admin` grants (never removes) the flag."""
    email = email.strip().lower()
    user, _ = User.objects.get_or_create(email=email, defaults={"username": email})
    if admin and not user.is_staff:
        user.is_staff = user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
    return user
