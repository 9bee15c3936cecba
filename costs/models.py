from django.db import models
from django.db.models import Q

from costs.money import SCOPES, Price


class ModelPrice(models.Model):
    """A model's list price from `effective_from` on, for one inference scope and/or region.

    Rates are integer micro-dollars per million tokens (USD/Mtok x 1e6). `scope` and `region`
    are "" for "any" (empty strings rather than NULL so that the unique key holds on every
    database). Above `long_prompt_threshold_tokens` prompt tokens (input + cache reads + cache
    writes) every token of the call is priced at `long_prompt_multiplier` times its rate.
    """

    model_id = models.CharField(max_length=200, help_text="Base Bedrock model id (no prefix)")
    scope = models.CharField(
        max_length=8,
        blank=True,
        default="",
        choices=[("", "any")] + [(scope, scope) for scope in SCOPES],
        help_text="Inference profile scope this price applies to; empty for any",
    )
    region = models.CharField(
        max_length=32, blank=True, default="", help_text="AWS region; empty for any"
    )
    input_rate = models.BigIntegerField(help_text="micro-USD per million input tokens")
    output_rate = models.BigIntegerField(help_text="micro-USD per million output tokens")
    cache_write_5m_rate = models.BigIntegerField(help_text="micro-USD per Mtok, 5-minute write")
    cache_write_1h_rate = models.BigIntegerField(help_text="micro-USD per Mtok, 1-hour write")
    cache_read_rate = models.BigIntegerField(help_text="micro-USD per Mtok, cache read")
    long_prompt_threshold_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    long_prompt_multiplier = models.DecimalField(
        max_digits=8, decimal_places=4, null=True, blank=True
    )
    effective_from = models.DateTimeField()
    source = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_id", "scope", "region", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_id", "scope", "region", "effective_from"],
                name="modelprice_key_uniq",
            ),
            models.CheckConstraint(
                condition=Q(input_rate__gte=0)
                & Q(output_rate__gte=0)
                & Q(cache_write_5m_rate__gte=0)
                & Q(cache_write_1h_rate__gte=0)
                & Q(cache_read_rate__gte=0),
                name="modelprice_rates_nonnegative",
            ),
            models.CheckConstraint(
                condition=(
                    Q(
                        long_prompt_threshold_tokens__isnull=True,
                        long_prompt_multiplier__isnull=True,
                    )
                    | Q(long_prompt_threshold_tokens__gt=0, long_prompt_multiplier__gte=1)
                ),
                name="modelprice_long_prompt_tier_complete",
            ),
            models.CheckConstraint(
                condition=Q(scope__in=["", *SCOPES]), name="modelprice_scope_known"
            ),
        ]
        indexes = [
            # models_without_price / admin filter by model and date; the unique key already
            # serves lookups by (model_id, scope, region).
            models.Index(fields=["model_id", "effective_from"], name="modelprice_model_from_idx"),
        ]

    def __str__(self) -> str:
        where = "/".join(part for part in (self.scope, self.region) if part) or "any"
        return f"{self.model_id} [{where}] from {self.effective_from:%Y-%m-%d}"

    def to_price(self) -> Price:
        return Price(
            model_id=self.model_id,
            scope=self.scope,
            region=self.region,
            input=self.input_rate,
            output=self.output_rate,
            cache_write_5m=self.cache_write_5m_rate,
            cache_write_1h=self.cache_write_1h_rate,
            cache_read=self.cache_read_rate,
            effective_from=self.effective_from,
            long_prompt_threshold_tokens=self.long_prompt_threshold_tokens,
            long_prompt_multiplier=self.long_prompt_multiplier,
        )
