from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import ValidationError

from accounts import throttle
from accounts.device import device_revoke
from accounts.models import ApiKey, AuditEvent, Device, User
from accounts.offboarding import user_offboard
from accounts.services import (
    ApiKeyLifetimeError,
    Origin,
    api_key_expiry,
    api_key_revoke,
    audit_record,
    user_credentials_invalidate,
    user_deactivate,
)
from config import clock

ADMIN_LOGIN = "admin password"


class AuditedAdminLoginForm(AdminAuthenticationForm):
    """/admin/login/: every attempt audited; after `auth.admin_login_failure_limit` failures
    for one user or from one address within `auth.admin_login_window_seconds`, refused."""

    def clean(self):  # Django's cleaned data
        username = (self.cleaned_data.get("username") or "").strip()
        origin = Origin.of(self.request)
        address = throttle.client_address(self.request.META) if self.request else "unknown"
        if throttle.admin_login_blocked(username, address):
            self._audit_failure(username, origin, "too many failed attempts")
            message = throttle.ADMIN_LOGIN_THROTTLED.format(minutes=throttle.admin_login_minutes())
            raise ValidationError(message, code="throttled")
        try:
            cleaned = super().clean()
        except ValidationError as exc:
            throttle.admin_login_failed(username, address)
            reason = "not staff" if self.user_cache is not None else "bad password"
            self._audit_failure(username, origin, reason)
            raise exc from None
        user = self.get_user()
        audit_record(
            action="login.success",
            actor=user,
            target=user.email,
            origin=origin,
            detail={"method": ADMIN_LOGIN},
        )
        return cleaned

    @staticmethod
    def _audit_failure(username: str, origin: Origin, reason: str) -> None:
        audit_record(
            action="login.failure",
            target=username,
            origin=origin,
            detail={"reason": reason, "method": ADMIN_LOGIN},
        )


admin.site.login_form = AuditedAdminLoginForm


class ApiKeyInline(admin.TabularInline):
    """A user's keys on their page, read-only: revoke them from the API keys list (action)."""

    model = ApiKey
    fields = ["name", "hint", "created_at", "last_used_at", "expires_at", "status"]
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Key")
    def hint(self, obj: ApiKey) -> str:
        return obj.hint

    @admin.display(description="Status")
    def status(self, obj: ApiKey) -> str:
        return obj.status


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Users; deactivating one (or changing the admin flag) takes effect on credentials at once."""

    list_display = ["email", "is_active", "is_staff", "is_superuser", "last_login", "date_joined"]
    search_fields = ["email", "username", "first_name", "last_name"]
    ordering = ["email"]
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        ("Gateway", {"fields": ["admin_from_config", "token_generation"]}),
    )
    readonly_fields = ["admin_from_config", "token_generation", "last_login", "date_joined"]
    actions = ["offboard", "deactivate"]
    # Other apps append theirs (caps adds the user's caps): accounts depends on none of them.
    inlines = [ApiKeyInline]

    def save_model(self, request, obj: User, form, change: bool) -> None:
        if change and {"is_staff", "is_superuser"} & set(form.changed_data):
            # Set by hand: no longer the configuration's to remove.
            obj.admin_from_config = False
        super().save_model(request, obj, form, change)
        if change:
            user_credentials_invalidate(user_id=obj.pk)

    def delete_model(self, request, obj: User) -> None:
        user_credentials_invalidate(user_id=obj.pk)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        for user_id in queryset.values_list("pk", flat=True):
            user_credentials_invalidate(user_id=user_id)
        super().delete_queryset(request, queryset)

    @admin.action(description="Deactivate (keys and tokens stop working at once)")
    def deactivate(self, request, queryset) -> None:
        for user in queryset:
            user_deactivate(user=user, actor=request.user, origin=Origin.of(request))
        self.message_user(request, f"Deactivated {queryset.count()} user(s).", messages.SUCCESS)

    @admin.action(description="Deactivate and revoke all credentials (offboard)")
    def offboard(self, request, queryset) -> None:
        keys = devices = 0
        for user in queryset:
            counts = user_offboard(
                user=user, actor=request.user, origin=Origin.of(request), reason="admin"
            )
            keys += counts["api_keys"]
            devices += counts["devices"]
        self.message_user(
            request,
            f"Offboarded {queryset.count()} user(s): {keys} key(s) and {devices} device(s) "
            "revoked, every session and token ended.",
            messages.SUCCESS,
        )


class ApiKeyAdminForm(forms.ModelForm):
    """An edited expiry obeys the configured lifetimes, counted from the key's creation."""

    class Meta:
        model = ApiKey
        fields = ["name", "expires_at"]

    def clean_expires_at(self):  # Django's cleaned value
        expires_at = self.cleaned_data.get("expires_at")
        if "expires_at" not in self.changed_data:
            return expires_at  # a key older than the policy keeps its expiry when renamed
        try:
            return api_key_expiry(expires_at, now=self.instance.created_at)
        except ApiKeyLifetimeError as exc:
            raise ValidationError(str(exc)) from None


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Every user's keys; admins revoke them here. The secret itself is never stored."""

    list_display = ["hint", "name", "user", "status", "created_at", "last_used_at", "expires_at"]
    list_filter = ["revoked_at", "expires_at"]
    search_fields = ["name", "prefix", "user__email"]
    list_select_related = ["user"]
    readonly_fields = [
        "user",
        "prefix",
        "last_four",
        "key_hash",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    fields = ["user", "name", "prefix", "last_four", "created_at", "last_used_at", "expires_at"]
    form = ApiKeyAdminForm
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        # A key is created by its owner (API or dashboard), who alone sees the secret.
        return False

    @admin.display(description="Key")
    def hint(self, obj: ApiKey) -> str:
        return obj.hint

    @admin.display(description="Status")
    def status(self, obj: ApiKey) -> str:
        return obj.status

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset) -> None:
        count = 0
        for api_key in queryset:
            api_key_revoke(api_key=api_key, actor=request.user, origin=Origin.of(request))
            count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # An edited expiry must be seen by every process's cache.
        user_credentials_invalidate(user_id=obj.user_id)

    def delete_model(self, request, obj: ApiKey) -> None:
        api_key_revoke(api_key=obj, actor=request.user, origin=Origin.of(request))
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        for api_key in queryset:
            api_key_revoke(api_key=api_key, actor=request.user, origin=Origin.of(request))
        super().delete_queryset(request, queryset)


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    """Devices signed in through the device flow (Claude Code's apiKeyHelper); admins revoke
    them here. Read-only otherwise: a device is created by its owner's approval."""

    list_display = ["name", "user", "client_id", "created_at", "last_used_at", "state"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__email", "client_id"]
    list_select_related = ["user"]
    fields = [
        "user",
        "name",
        "client_id",
        "ip",
        "user_agent",
        "created_at",
        "last_used_at",
        "refresh_expires_at",
        "revoked_at",
    ]
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: the audit trail keeps the device

    @admin.display(description="State")
    def state(self, obj: Device) -> str:
        if obj.revoked_at:
            return "revoked"
        return "expired" if obj.refresh_expires_at <= clock.now() else "active"

    @admin.action(description="Revoke selected devices")
    def revoke(self, request, queryset) -> None:
        count = 0
        for device in queryset:
            device_revoke(device=device, actor=request.user, origin=Origin.of(request))
            count += 1
        self.message_user(request, f"Revoked {count} device(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit trail: read-only."""

    list_display = ["created_at", "action", "actor", "target", "ip"]
    list_filter = ["action"]
    search_fields = ["target", "actor__email", "ip"]
    date_hierarchy = "created_at"
    list_select_related = ["actor"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
