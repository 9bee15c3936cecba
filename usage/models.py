from django.db import models


class Counter(models.Model):
    """One field of a counter in the embedded store (used when no Redis is configured).

    Mirrors a Redis hash: `key` is the Redis key, `field` the hash field. A row past
    `expires_at` counts as absent, like an expired Redis key, and is swept by a job.
    """

    key = models.CharField(max_length=200)
    field = models.CharField(max_length=64)
    value = models.BigIntegerField(default=0)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "field"], name="counter_key_field_uniq")
        ]
        indexes = [models.Index(fields=["expires_at"], name="counter_expires_idx")]

    def __str__(self) -> str:
        return f"{self.key}.{self.field}={self.value}"
