from django.conf import settings
from django.db import models
from django.db.models import Q


class CapType(models.TextChoices):
    HOURLY = "hourly", "Hourly"
    DAILY = "daily", "Daily"
    MONTHLY = "monthly", "Monthly"
    # Cost per Claude Code session (max_cost_cents only).
    SESSION = "session", "Per session"


class SetBy(models.TextChoices):
    ADMIN = "admin", "Administrator"
    USER = "user", "User"


class UserCapConfig(models.Model):
    """A usage cap: a user's maximum requests / tokens / cost per UTC hour, day or month.

    A cap is unique per (user, period, owner): an administrator's cap (also the configured
    defaults) and the user's own may coexist, and the strictest applies. A user cannot edit or
    remove an administrator's cap. `enforce_from` ends the grace period: a cap an administrator
    creates or tightens for an existing user blocks only from then (until then it still enforces
    `prior_limits`, the limits it had before, if any), while the status already shows it.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="cap_configs"
    )
    cap_type = models.CharField(max_length=10, choices=CapType.choices)
    max_requests = models.IntegerField(null=True, blank=True)
    max_tokens = models.BigIntegerField(null=True, blank=True)
    max_cost_cents = models.BigIntegerField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    set_by = models.CharField(max_length=5, choices=SetBy.choices, default=SetBy.USER)
    # Null: blocks at once (a user's own cap, or a change that only loosens).
    enforce_from = models.DateTimeField(null=True, blank=True)
    # {"max_requests": .., "max_tokens": .., "max_cost_cents": ..} enforced during the grace
    # period of a tightening; null when the cap had no enforced limits before.
    prior_limits = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "user_cap_configs"
        ordering = ["user_id", "cap_type", "set_by"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "cap_type", "set_by"], name="cap_user_type_owner_uniq"
            ),
            models.CheckConstraint(
                condition=Q(cap_type__in=["hourly", "daily", "monthly", "session"]),
                name="cap_type_valid",
            ),
            models.CheckConstraint(
                condition=Q(set_by__in=["admin", "user"]), name="cap_set_by_valid"
            ),
            models.CheckConstraint(
                condition=Q(max_requests__isnull=True) | Q(max_requests__gt=0),
                name="cap_max_requests_positive",
            ),
            models.CheckConstraint(
                condition=Q(max_tokens__isnull=True) | Q(max_tokens__gt=0),
                name="cap_max_tokens_positive",
            ),
            models.CheckConstraint(
                condition=Q(max_cost_cents__isnull=True) | Q(max_cost_cents__gt=0),
                name="cap_max_cost_cents_positive",
            ),
            models.CheckConstraint(
                condition=Q(max_requests__isnull=False)
                | Q(max_tokens__isnull=False)
                | Q(max_cost_cents__isnull=False),
                name="cap_some_limit_set",
            ),
        ]
        indexes = [models.Index(fields=["user", "is_active"], name="cap_user_active_idx")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.cap_type} cap ({self.set_by})"


class LimitsCheck:
    """The constraints every cap row shares: limits positive when set."""

    @staticmethod
    def constraints(prefix: str) -> list[models.BaseConstraint]:
        return [
            models.CheckConstraint(
                condition=Q(max_requests__isnull=True) | Q(max_requests__gt=0),
                name=f"{prefix}_max_requests_positive",
            ),
            models.CheckConstraint(
                condition=Q(max_tokens__isnull=True) | Q(max_tokens__gt=0),
                name=f"{prefix}_max_tokens_positive",
            ),
            models.CheckConstraint(
                condition=Q(max_cost_cents__isnull=True) | Q(max_cost_cents__gt=0),
                name=f"{prefix}_max_cost_cents_positive",
            ),
        ]


class TeamCapConfig(models.Model):
    """A team's cap: the most its members may use together per UTC hour, day or month.

    Checked with each member's own caps in the same reservation (caps.reservations). Tightening
    it blocks only after the grace period, as for a user's cap.
    """

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="caps")
    cap_type = models.CharField(
        max_length=10,
        choices=[(t, label) for t, label in CapType.choices if t != CapType.SESSION],
    )
    max_requests = models.IntegerField(null=True, blank=True)
    max_tokens = models.BigIntegerField(null=True, blank=True)
    max_cost_cents = models.BigIntegerField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    enforce_from = models.DateTimeField(null=True, blank=True)
    prior_limits = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "team_cap_configs"
        ordering = ["team_id", "cap_type"]
        constraints = [
            models.UniqueConstraint(fields=["team", "cap_type"], name="teamcap_team_type_uniq"),
            models.CheckConstraint(
                condition=Q(cap_type__in=["hourly", "daily", "monthly"]),
                name="teamcap_type_valid",
            ),
            *LimitsCheck.constraints("teamcap"),
        ]

    def __str__(self) -> str:
        return f"team {self.team_id} {self.cap_type} cap"


class CapPolicy(models.Model):
    """The caps every user has unless an administrator set their own for that period: one row
    per period, the effective limits (a value set in YAML or the environment is copied here at
    start and wins over an edit in admin). Null = no such limit."""

    cap_type = models.CharField(max_length=10, choices=CapType.choices, unique=True)
    max_requests = models.IntegerField(null=True, blank=True)
    max_tokens = models.BigIntegerField(null=True, blank=True)
    max_cost_cents = models.BigIntegerField(null=True, blank=True)
    enforce_from = models.DateTimeField(null=True, blank=True)
    prior_limits = models.JSONField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "cap_policy"
        ordering = ["id"]
        verbose_name = "cap policy"
        verbose_name_plural = "cap policy"
        constraints = LimitsCheck.constraints("policy")

    def __str__(self) -> str:
        return f"{self.cap_type} policy"


class CapLease(models.Model):
    """An open reservation in the embedded store (Redis keeps these in a hash + sorted set).

    Its amounts sit in the in-flight counters of the windows where the call started, until it
    is settled or, once `expires_at` has passed, released by the user's next reservation.
    """

    id = models.CharField(max_length=32, primary_key=True)
    # The owner: a user, or a team as the negative of its id (no constraint for that reason).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_constraint=False
    )
    started_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    requests = models.BigIntegerField()
    tokens = models.BigIntegerField()
    cost_micros = models.BigIntegerField()
    # The call's worst case (input estimate + max_tokens, priced), held in the windows'
    # `if_worst_*` counters; `uncovered`: it did not fit the caps' headroom when reserved.
    worst_tokens = models.BigIntegerField(default=0)
    worst_cost_micros = models.BigIntegerField(default=0)
    uncovered = models.BooleanField(default=False)
    # The call's session window (a per-session cost counter), if it had a session id.
    session_key = models.CharField(max_length=200, null=True, blank=True)

    class Meta:
        db_table = "cap_leases"
        indexes = [models.Index(fields=["user", "expires_at"], name="caplease_user_expires_idx")]

    def __str__(self) -> str:
        return f"lease {self.id} of {self.user_id}"
