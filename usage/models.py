from django.conf import settings
from django.db import models
from django.utils import timezone


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


class UsageRecord(models.Model):
    """One call that reached the upstream: who, which model, tokens, cost and timings.

    The source of truth for every summary and counter: if the counter store is lost, they are
    rebuilt from these rows. `call_id` is unique so that recording is idempotent. A call counts
    in the window where it started (`started_at`), however long it ran.
    """

    call_id = models.UUIDField(unique=True)
    # PROTECT: billing history outlives nothing by accident; deactivate users instead.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="usage_records"
    )
    # Null for JWT calls (or a key deleted since; `auth_kind` still says "api_key").
    api_key = models.ForeignKey(
        "accounts.ApiKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="usage_records",
    )
    # The user's team when the call was made (kept when the team is deleted: billing history).
    team = models.ForeignKey(
        "accounts.Team",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    auth_kind = models.CharField(max_length=16)
    model_id = models.CharField(max_length=300)
    base_model_id = models.CharField(max_length=200)
    route = models.CharField(max_length=40)
    streaming = models.BooleanField(default=False)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_write_5m_tokens = models.BigIntegerField(default=0)
    cache_write_1h_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    # Null = no price known for this model at `started_at`.
    cost_micros = models.BigIntegerField(null=True, blank=True)
    upstream_status = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=100, null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    ttfb_ms = models.PositiveIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=100, blank=True, default="")
    client_family = models.CharField(max_length=40, default="other")
    session_id = models.CharField(max_length=100, null=True, blank=True)
    started_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-started_at"], name="usagerec_user_started_idx"),
            models.Index(fields=["user", "base_model_id"], name="usagerec_user_model_idx"),
            models.Index(fields=["started_at"], name="usagerec_started_idx"),
            models.Index(fields=["api_key", "-started_at"], name="usagerec_key_started_idx"),
            # GET /api/usage/sessions: one user's records grouped by Claude Code session.
            models.Index(fields=["user", "session_id"], name="usagerec_user_session_idx"),
            models.Index(fields=["team", "started_at"], name="usagerec_team_started_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(input_tokens__gte=0)
                & models.Q(output_tokens__gte=0)
                & models.Q(cache_write_5m_tokens__gte=0)
                & models.Q(cache_write_1h_tokens__gte=0)
                & models.Q(cache_read_tokens__gte=0),
                name="usagerec_tokens_nonneg",
            ),
            models.CheckConstraint(
                condition=models.Q(cost_micros__isnull=True) | models.Q(cost_micros__gte=0),
                name="usagerec_cost_nonneg",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.call_id} {self.model_id} {self.started_at:%Y-%m-%dT%H:%M}"

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens


class UsageSummary(models.Model):
    """A user's totals for one period (hour, day, ISO week from Monday, month), UTC.

    Hourly rows are persisted from records by the hourly job once the hour is over; daily,
    weekly and monthly rows are rolled up from hourly rows. Totals are absolute values, so
    writing a row twice gives the same row.
    """

    class Period(models.TextChoices):
        HOURLY = "hourly"
        DAILY = "daily"
        WEEKLY = "weekly"
        MONTHLY = "monthly"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_summaries"
    )
    period = models.CharField(max_length=8, choices=Period.choices)
    period_start = models.DateTimeField()
    # The team of the user's calls in the period (UsageRecord.team: the team at call time), so
    # that team reports hold after the records are purged. A user who changed team within one
    # period counts whole for the team of most of that period's calls (ties: the latest).
    team = models.ForeignKey(
        "accounts.Team",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    # Micro-dollars of the calls with a known price; the others are counted apart.
    cost_micros = models.BigIntegerField(default=0)
    unknown_cost_requests = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-period_start"]
        verbose_name_plural = "usage summaries"
        constraints = [
            models.UniqueConstraint(
                fields=["user", "period", "period_start"], name="usagesum_user_period_start_uniq"
            ),
        ]
        indexes = [
            models.Index(fields=["period", "period_start"], name="usagesum_period_start_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.period} {self.period_start:%Y-%m-%dT%H}"
