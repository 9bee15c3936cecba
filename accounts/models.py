from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone
from django.utils.crypto import salted_hmac

from config import clock


class Team(models.Model):
    """A cost centre: its members share its caps (caps.TeamCapConfig), and its spend is
    reported apart. A user is in at most one team (`User.team`)."""

    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    """A person who signs in through SSO; `is_superuser` is the gateway's admin flag.

    `is_staff` alone only opens Django's admin site (as Django requires) and grants nothing on
    the gateway's API; the gateway gives its administrators both flags.
    """

    email = models.EmailField(unique=True)
    # True when the admin flag came from `auth.admin_emails`: only such a flag is removed when
    # the e-mail leaves the list. A superuser made by createsuperuser (False here) keeps it.
    admin_from_config = models.BooleanField(default=False)
    # Carried in every JWT as the `tgen` claim; sign-out increments it, which rejects every
    # token issued before (exact, unlike comparing whole-second `iat` with a timestamp).
    token_generation = models.PositiveIntegerField(default=0)
    # Created by the demo sign-in (auth.demo_provider): the only accounts it may sign into.
    created_by_demo = models.BooleanField(default=False)
    # Part of every session's auth hash once non-zero: "sign out everywhere" increments it,
    # which ends every session of the user (Django checks the hash on each request).
    session_generation = models.PositiveIntegerField(default=0)
    # Change it through accounts.services.user_team_set (cached credentials carry the team).
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="members"
    )

    @property
    def is_admin(self) -> bool:
        return self.is_superuser

    def _get_session_auth_hash(self, secret=None) -> str:
        # Generation 0 keeps Django's own hash, so existing sessions survive this field.
        if not self.session_generation:
            return super()._get_session_auth_hash(secret=secret)
        return salted_hmac(
            "accounts.User.get_session_auth_hash",
            f"{self.password}:{self.session_generation}",
            secret=secret,
            algorithm="sha256",
        ).hexdigest()


class ApiKey(models.Model):
    """A user's API key: only a keyed hash of it is stored, with a prefix to recognise it."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    # The first characters of the key ("SSOK_abcd", "SSOK_v2_abcd") and its last four.
    prefix = models.CharField(max_length=24)
    last_four = models.CharField(max_length=4)
    key_hash = models.CharField(max_length=64, unique=True)
    # Which secret of `auth.api_key_hash_keys` hashed this key (1 = the oldest, or
    # server.secret_key when none is configured); keys of version 2+ carry it as `v<N>_`.
    hash_version = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"], name="apikey_user_created_idx")]

    def __str__(self) -> str:
        return f"{self.hint} ({self.name})"

    @property
    def hint(self) -> str:
        return f"{self.prefix}****{self.last_four}"

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= clock.now():
            return "expired"
        return "active"

    @property
    def expires_in_days(self) -> int | None:
        """Whole days left before the key expires (0: within a day); None if it never does."""
        if self.expires_at is None:
            return None
        return max(0, (self.expires_at - clock.now()).days)


class AuthGeneration(models.Model):
    """One row whose counter moves on every revocation: per-process caches compare against it.

    On the embedded store each process caches principals in its own memory; reading this one
    row by primary key on every request is what makes a revocation in one process take effect
    in all of them at once.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"auth generation {self.value}"


class AuditEvent(models.Model):
    """Who did what to whose credentials, and every sign-in attempt: read-only for admins."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="audit_events",
    )
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=255, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at"], name="auditevent_created_idx"),
            models.Index(fields=["action", "-created_at"], name="auditevent_action_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.target}"


class DeviceAuthorization(models.Model):
    """One run of the device flow (RFC 8628): a device asked, a signed-in person decides.

    Both codes are stored as keyed hashes only; the device code is single-use (``consumed``
    once it has been exchanged for tokens) and both expire together.
    """

    PENDING, APPROVED, DENIED, CONSUMED = "pending", "approved", "denied", "consumed"
    STATUSES = tuple((s, s) for s in (PENDING, APPROVED, DENIED, CONSUMED))

    device_code_hash = models.CharField(max_length=64, unique=True)
    user_code_hash = models.CharField(max_length=64, unique=True)
    client_id = models.CharField(max_length=200)
    device_name = models.CharField(max_length=200, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(default=clock.now)
    expires_at = models.DateTimeField()
    interval = models.PositiveIntegerField(default=5)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=STATUSES, default=PENDING)
    # Who approved or denied it, and when.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="device_authorizations",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    device = models.ForeignKey(
        "Device", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="deviceauth_expires_idx")]

    def __str__(self) -> str:
        return f"device authorization {self.pk} ({self.status})"


class Device(models.Model):
    """A device signed in through the device flow: its refresh token (hashed, rotated on use)
    mints short-lived access tokens (DeviceToken). Revoking it kills all of them at once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="devices"
    )
    name = models.CharField(max_length=200)
    client_id = models.CharField(max_length=200)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(default=clock.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    refresh_token_hash = models.CharField(max_length=64, unique=True)
    # Sliding: every rotation gives the new refresh token a full lifetime.
    refresh_expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"], name="device_user_created_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.user_id})"

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.refresh_expires_at <= clock.now():
            return "expired"
        return "active"


class DeviceToken(models.Model):
    """A short-lived access token of a device (``SSOD_…``): only its keyed hash is stored."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    hash_version = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(default=clock.now)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["device", "expires_at"], name="devicetoken_device_idx")]

    def __str__(self) -> str:
        return f"device token {self.pk} of device {self.device_id}"
