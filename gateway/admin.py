from django.contrib import admin

from gateway.model_map import model_map_invalidate
from gateway.models import ModelAlias


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    """The editable model map; every change is pushed to the proxy's per-process caches."""

    list_display = (
        "anthropic_name",
        "bedrock_model_id",
        "display_name",
        "released_at",
        "is_active",
        "updated_at",
    )
    list_editable = ("bedrock_model_id", "display_name", "is_active")
    list_filter = ("is_active",)
    search_fields = ("anthropic_name", "bedrock_model_id", "display_name")
    readonly_fields = ("created_at", "updated_at")
    actions = ("activate", "deactivate")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        model_map_invalidate()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        model_map_invalidate()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        model_map_invalidate()

    @admin.action(description="Activate selected model aliases")
    def activate(self, request, queryset):
        queryset.update(is_active=True)
        model_map_invalidate()

    @admin.action(description="Deactivate selected model aliases")
    def deactivate(self, request, queryset):
        queryset.update(is_active=False)
        model_map_invalidate()
