"""HTML pages of accounts: the token page for people who paste a JWT into a CLI, API keys."""

import json
from datetime import UTC, date, datetime, time

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts.models import ApiKey, Device
from accounts.services import (
    ApiKeyLifetimeError,
    Origin,
    api_key_create,
    api_key_revoke,
    token_pair_create,
)
from config import clock


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_page(request: HttpRequest) -> HttpResponse:
    """GET: a button; POST (CSRF-protected): a fresh access + refresh pair, shown once."""
    tokens = token_pair_create(user=request.user) if request.method == "POST" else None
    return render(request, "account/token.html", {"tokens": tokens})


# --- API keys pages ---------------------------------------------------------------------------


class ApiKeyForm(forms.Form):
    """A new key: a name, and optionally the date it stops working."""

    name = forms.CharField(label="Name", max_length=100, help_text="e.g. laptop, CI, Claude Code")
    expires_on = forms.DateField(
        label="Expires on (optional)",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        help_text="The key stops working at 00:00 UTC on this date.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        auth = settings.GATEWAY.auth
        field = self.fields["expires_on"]
        if auth.api_key_max_lifetime_days is not None:
            field.label = "Expires on"
            field.help_text += f" At most {auth.api_key_max_lifetime_days:g} days from now."
        if auth.api_key_default_lifetime_days is not None:
            field.help_text += f" Empty: {auth.api_key_default_lifetime_days:g} days from now."
        elif auth.api_key_max_lifetime_days is not None:
            field.help_text += " Empty: the longest allowed."

    def clean_expires_on(self) -> date | None:
        day = self.cleaned_data.get("expires_on")
        if day is not None and day <= clock.now().date():
            raise forms.ValidationError("Must be a date after today.")
        return day

    def expires_at(self) -> datetime | None:
        day = self.cleaned_data.get("expires_on")
        return datetime.combine(day, time.min, tzinfo=UTC) if day else None


def _client_setup(request: HttpRequest) -> dict:
    """What the connection snippets need: this gateway's URLs, region, CA bundle."""
    server = settings.GATEWAY.server
    # Behind a proxy, server.public_url is the address clients use; else, the one in use.
    base = server.public_url or request.build_absolute_uri("/").rstrip("/")
    if server.public_https or (not server.public_url and request.is_secure()):
        https_base = base
    else:
        # boto3 sends a bearer token only over HTTPS: point it at the TLS listener.
        https_base = f"https://{request.get_host().rsplit(':', 1)[0]}:{server.tls_port}"
    ca_bundle = server.tls_certfile or (
        str(settings.VAR_DIR / "tls" / "localhost.pem") if server.tls_autogenerate else None
    )
    if server.public_url:
        ca_bundle = None  # the proxy's certificate, not one of ours
    return {
        "base_url": base,
        "https_base": https_base,
        "ca_bundle": ca_bundle,
        "region": settings.GATEWAY.aws.region,
    }


def _helper_setup(request: HttpRequest) -> dict:
    """The ~/.claude/settings.json that runs tools/gateway_token.py as Claude Code's apiKeyHelper.

    Claude Code keeps the helper's answer for CLAUDE_CODE_API_KEY_HELPER_TTL_MS; the helper
    hands out a token only while it has at least min(300 s, a quarter of its lifetime) left, so
    a TTL below that margin never lets Claude Code hold an expired token.
    """
    base = settings.GATEWAY.server.public_url or request.build_absolute_uri("/").rstrip("/")
    lifetime = settings.GATEWAY.auth.device_token_lifetime_seconds
    ttl_seconds = max(1, int(min(300, lifetime / 4) * 0.8))
    helper = f"python3 ~/.claude/gateway_token.py --url {base}"
    claude_settings = {
        "apiKeyHelper": helper,
        "env": {
            "ANTHROPIC_BASE_URL": f"{base}/anthropic",
            "CLAUDE_CODE_API_KEY_HELPER_TTL_MS": str(ttl_seconds * 1000),
        },
    }
    status = dict(claude_settings)
    status["statusLine"] = {
        "type": "command",
        "command": f"python3 ~/.claude/gateway_status.py --url {base}",
    }
    return {
        "helper_command": helper,
        "helper_settings": json.dumps(claude_settings, indent=2),
        "helper_settings_status": json.dumps(status, indent=2),
    }


def _days(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def keys_page(request: HttpRequest) -> HttpResponse:
    """GET: the user's keys; POST: create one and show it in full, this once."""
    form = ApiKeyForm(request.POST or None)
    created = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                created = api_key_create(
                    user=request.user,
                    name=form.cleaned_data["name"],
                    expires_at=form.expires_at(),
                    origin=Origin.of(request),
                )
            except ApiKeyLifetimeError as exc:
                form.add_error("expires_on", str(exc))
            else:
                form = ApiKeyForm()
        if created is None:
            status = 400
    keys = ApiKey.objects.filter(user=request.user).order_by("-created_at", "-id")
    devices = Device.objects.filter(user=request.user).order_by("-created_at", "-id")
    auth = settings.GATEWAY.auth
    context = {
        "form": form,
        # Shown as the error messages say them (30, not 30.0).
        "max_lifetime_days": _days(auth.api_key_max_lifetime_days),
        "default_lifetime_days": _days(auth.api_key_default_lifetime_days),
        "keys": keys,
        "devices": devices,
        "created": created,
        **_client_setup(request),
        **_helper_setup(request),
    }
    return render(request, "keys/index.html", context, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: confirm; POST: revoke one of the user's keys (someone else's is a 404)."""
    api_key = get_object_or_404(ApiKey, pk=pk, user=request.user)
    if request.method == "POST":
        api_key_revoke(api_key=api_key, actor=request.user, origin=Origin.of(request))
        messages.success(request, f"Key {api_key.hint} ({api_key.name}) revoked.")
        return redirect("keys-page")
    return render(request, "keys/revoke.html", {"key": api_key})
