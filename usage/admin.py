from django.contrib import admin

from costs.money import micros_usd
from usage.models import UsageRecord, UsageSummary


class ReadOnlyAdmin(admin.ModelAdmin):
    """Usage is written by the proxy and the jobs only; admins look, never edit."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "user",
        "model_id",
        "route",
        "upstream_status",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cost",
        "latency_ms",
        "client_family",
    ]
    list_filter = [
        "base_model_id",
        "route",
        "upstream_status",
        "client_family",
        "streaming",
        ("started_at", admin.DateFieldListFilter),
    ]
    search_fields = ["user__email", "model_id", "request_id", "session_id", "=call_id"]
    date_hierarchy = "started_at"
    list_select_related = ["user"]
    show_full_result_count = False

    @admin.display(description="cost", ordering="cost_micros")
    def cost(self, obj: UsageRecord) -> str:
        return micros_usd(obj.cost_micros)


@admin.register(UsageSummary)
class UsageSummaryAdmin(ReadOnlyAdmin):
    list_display = [
        "period_start",
        "period",
        "user",
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cost",
        "unknown_cost_requests",
    ]
    list_filter = ["period", ("period_start", admin.DateFieldListFilter)]
    search_fields = ["user__email"]
    date_hierarchy = "period_start"
    list_select_related = ["user"]

    @admin.display(description="cost", ordering="cost_micros")
    def cost(self, obj: UsageSummary) -> str:
        return micros_usd(obj.cost_micros)


# Imported for its effect: the admin index as this product (overview first, one Accounts).
from usage import admin_site  # noqa: E402, F401
