from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


class User(AbstractUser):
    """A person who signs in through SSO; `is_staff` is the gateway's admin flag."""

    email = models.EmailField(unique=True)

    @property
    def is_admin(self) -> bool:
        return self.is_staff or self.is_superuser


class ApiKey(models.Model):
    """A user's API key: only a keyed hash of it is stored, with a prefix to recognise it."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    # The first characters of the key (e.g. "SSOK_abcd") and its last four, for recognition.
    prefix = models.CharField(max_length=16)
    last_four = models.CharField(max_length=4)
    key_hash = models.CharField(max_length=64, unique=True)
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
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"
