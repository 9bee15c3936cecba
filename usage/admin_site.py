"""The admin index as this product: the overview first (templates/admin/index.html), and one
"Accounts" section — allauth's e-mail addresses and social accounts are shown, read-only, on
the user's own page instead of as sections of their own; sign-in providers are configured in
settings, not in the database, and groups are unused (administrators are superusers)."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount, SocialApp, SocialToken
from django.contrib import admin
from django.contrib.auth.models import Group

from accounts.admin import UserAdmin

for model in (EmailAddress, SocialAccount, SocialApp, SocialToken, Group):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class EmailAddressInline(ReadOnlyInline):
    """The user's e-mail addresses as allauth knows them."""

    model = EmailAddress
    fields = ["email", "verified", "primary"]
    readonly_fields = fields


class SocialAccountInline(ReadOnlyInline):
    """The identities the user signed in with (provider and subject)."""

    model = SocialAccount
    fields = ["provider", "uid", "last_login", "date_joined"]
    readonly_fields = fields


UserAdmin.inlines = [*UserAdmin.inlines, EmailAddressInline, SocialAccountInline]
