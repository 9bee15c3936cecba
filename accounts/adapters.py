"""allauth adapters: who may sign in, the admin flag at each sign-in, JWT revocation at sign-out."""

from __future__ import annotations

import logging
from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts import github_orgs
from accounts.models import User
from accounts.services import (
    Origin,
    audit_record,
    email_domain_allowed,
    groups_of,
    user_admin_flag_apply,
    user_team_from_groups,
    user_tokens_revoke,
)

# The demo sign-in's provider id (config/settings.py adds it when auth.demo_provider is on).
DEMO_PROVIDER_ID = "demo"
NOT_A_DEMO_ACCOUNT = (
    "an account with this e-mail exists that the demo sign-in did not create, and the demo "
    "sign-in never signs into such an account (use another e-mail address)"
)


def demo_sign_in_on() -> bool:
    """Whether the demo sign-in is on (conf.py keeps it off unless loopback and no provider)."""
    return settings.GATEWAY.auth.demo_provider


def _is_demo(sociallogin) -> bool:
    return demo_sign_in_on() and sociallogin.account.provider == DEMO_PROVIDER_ID


logger = logging.getLogger(__name__)


def _refuse(request: HttpRequest, *, email: str, reason: str, provider: str) -> HttpResponse:
    audit_record(
        action="login.failure",
        target=email,
        origin=Origin.of(request),
        detail={"reason": reason, "provider": provider},
    )
    return render(
        request,
        "socialaccount/sign_in_refused.html",
        {"reason": reason, "email": email},
        status=403,
    )


def _token(sociallogin) -> str:
    return sociallogin.token.token if sociallogin.token is not None else ""


def _claims(sociallogin) -> dict[str, Any]:
    """An OpenID Connect sign-in's claims: allauth keeps userinfo and the ID token; userinfo
    wins, as in allauth."""
    data = sociallogin.account.extra_data or {}
    return data.get("userinfo") or data.get("id_token") or data


def _team_sync(request: HttpRequest, sociallogin) -> None:
    """`auth.team_groups` at an OpenID Connect sign-in that sent a `groups` claim, or a GitHub
    sign-in (its orgs and teams as groups: "org", "org/team-slug")."""
    provider = sociallogin.account.get_provider(request).id
    if provider == "github" and settings.GATEWAY.auth.team_groups:
        groups = github_orgs.groups(token=_token(sociallogin))
    elif provider == "openid_connect":
        groups = groups_of(_claims(sociallogin))
    else:
        return
    if groups is not None and sociallogin.user.pk:
        user_team_from_groups(user=sociallogin.user, groups=groups)


def _email_verified_if_required(request: HttpRequest, sociallogin, provider_id: str) -> bool:
    """For OpenID Connect providers with `auth.oidc.<id>.require_email_verified` (the default,
    also for a provider not in the configuration, such as the demo one): whether the claims say
    `email_verified: true`. A missing claim is not a verified e-mail. Other providers: True
    (allauth's GitHub, Google, ... providers read their own verified-e-mail data)."""
    if sociallogin.account.get_provider(request).id != "openid_connect":
        return True
    configured = settings.GATEWAY.auth.oidc.get(provider_id)
    if configured is not None and not configured.require_email_verified:
        return True
    verified = _claims(sociallogin).get("email_verified")
    # Some providers send the claim as a string.
    return verified is True or (isinstance(verified, str) and verified.lower() == "true")


class AccountAdapter(DefaultAccountAdapter):
    """Local accounts only with `auth.local_passwords`; every sign-in applies the admin list."""

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return settings.GATEWAY.auth.local_passwords

    def pre_login(self, request: HttpRequest, user, **kwargs: Any) -> HttpResponse | None:
        # Superusers made on the command line may always sign in (to fix the configuration).
        if not user.is_superuser and not email_domain_allowed(user.email):
            return _refuse(request, email=user.email, reason="domain not allowed", provider="")
        return super().pre_login(request, user, **kwargs)

    def login(self, request: HttpRequest, user) -> None:
        # A demo account is an administrator only while its e-mail is listed: anyone can sign
        # in as it, so a flag given by hand must not outlive the list.
        user_admin_flag_apply(user=user, listed_only=user.created_by_demo)
        super().login(request, user)
        audit_record(
            action="login.success",
            actor=user,
            target=user.email,
            origin=Origin.of(request),
            detail={"method": getattr(user, "backend", "")},
        )

    def authentication_failed(self, request: HttpRequest, **credentials: Any) -> None:
        audit_record(
            action="login.failure",
            target=str(credentials.get("email") or credentials.get("username") or ""),
            origin=Origin.of(request),
            detail={"reason": "bad password", "provider": ""},
        )

    def logout(self, request: HttpRequest) -> None:
        """Sign-out ends the session and revokes every JWT of the user."""
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            user_tokens_revoke(user=user, origin=Origin.of(request))
            audit_record(action="logout", actor=user, target=user.email, origin=Origin.of(request))
        super().logout(request)


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """SSO sign-in: anyone the provider vouches for, within the allowed domains and orgs."""

    def is_open_for_signup(self, request: HttpRequest, sociallogin) -> bool:
        # Accounts are created on first SSO sign-in; who may sign in is pre_social_login's call.
        return True

    def can_authenticate_by_email(self, login, email: str) -> bool:
        # The demo sign-in vouches for nothing: it never signs into an account by its e-mail.
        if _is_demo(login):
            return False
        return super().can_authenticate_by_email(login, email)

    def _demo_account_check(self, request: HttpRequest, sociallogin, email: str) -> None:
        """The demo sign-in signs into demo-created accounts only, and marks new ones."""
        user = sociallogin.user
        if sociallogin.is_existing:
            allowed = user.created_by_demo
        else:
            allowed = not User.objects.filter(email__iexact=email).exists()
            user.created_by_demo = True  # saved with the new account
        if not allowed:
            raise ImmediateHttpResponse(
                _refuse(request, email=email, reason=NOT_A_DEMO_ACCOUNT, provider="demo")
            )

    def pre_social_login(self, request: HttpRequest, sociallogin) -> None:
        provider = sociallogin.account.provider  # the OIDC provider's own id, e.g. "demo"
        email = (sociallogin.user.email or "").strip().lower()
        if not email:
            addresses = [a.email for a in sociallogin.email_addresses if a.email]
            email = addresses[0].strip().lower() if addresses else ""
        if not email:
            raise ImmediateHttpResponse(
                _refuse(request, email="", reason="no e-mail address", provider=provider)
            )
        if not _email_verified_if_required(request, sociallogin, provider):
            # The e-mail decides the allowed domains, the admin list and the account: only
            # one the provider vouches for may decide them.
            raise ImmediateHttpResponse(
                _refuse(request, email=email, reason="e-mail not verified", provider=provider)
            )
        if not email_domain_allowed(email):
            raise ImmediateHttpResponse(
                _refuse(request, email=email, reason="domain not allowed", provider=provider)
            )
        if _is_demo(sociallogin):
            self._demo_account_check(request, sociallogin, email)
        allowed_orgs = settings.GATEWAY.auth.allowed_github_orgs
        if (
            provider == "github"
            and allowed_orgs
            and not github_orgs.member_of_any(token=_token(sociallogin), orgs=allowed_orgs)
        ):
            raise ImmediateHttpResponse(
                _refuse(request, email=email, reason="GitHub org not allowed", provider=provider)
            )
        if sociallogin.is_existing:
            _team_sync(request, sociallogin)  # a new user: in save_user, once it has an id

    def save_user(self, request: HttpRequest, sociallogin, form=None) -> User:
        user = super().save_user(request, sociallogin, form)
        _team_sync(request, sociallogin)
        return user

    def on_authentication_error(
        self,
        request: HttpRequest,
        provider,
        error=None,
        exception=None,
        extra_context=None,
    ) -> None:
        audit_record(
            action="login.failure",
            origin=Origin.of(request),
            detail={
                "provider": getattr(provider, "sub_id", None) or getattr(provider, "id", ""),
                "error": str(error or ""),
                "exception": type(exception).__name__ if exception else "",
            },
        )
