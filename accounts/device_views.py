"""Device sign-in over HTTP: the RFC 8628 endpoints, the /device page, device revocation,
sign-out everywhere, and the shipped Claude Code helper scripts.

``POST /oauth/device/code`` and ``POST /oauth/token`` take ``application/x-www-form-urlencoded``
(as RFC 8628 and RFC 6749 say) or JSON, and answer errors as RFC 6749 §5.2 bodies
(``{"error", "error_description"}``, status 400; 429 when an address asks for too many codes).
"""

from __future__ import annotations

import json
import math

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from accounts import throttle
from accounts.device import (
    DEVICE_CODE_GRANT,
    DeviceFlowError,
    device_authorization_create,
    device_authorization_decide,
    device_authorization_pending,
    device_revoke,
    device_token_exchange,
    device_token_refresh,
    logout_everywhere,
)
from accounts.models import Device
from accounts.services import Origin
from config import clock
from config.conf import BASE_DIR

# Device codes one client address may ask for per minute.
DEVICE_CODES_PER_MINUTE = 10
# Wrong user codes one signed-in person may enter per window at /device (guessing codes).
USER_CODE_FAILURES = 20
USER_CODE_FAILURE_WINDOW = 600
MAX_FORM_BYTES = 8192
TOOLS_DIR = BASE_DIR / "tools"
SHIPPED_TOOLS = ("gateway_token.py", "gateway_status.py")


def public_base(request: HttpRequest) -> str:
    """The address clients use: server.public_url, else the request's origin."""
    return (settings.GATEWAY.server.public_url or request.build_absolute_uri("/")).rstrip("/")


def _oauth_error(error: str, description: str, status: int = 400) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    return response


def _params(request: HttpRequest) -> dict[str, str]:
    """Form-encoded (the RFC's) or JSON parameters; DeviceFlowError(invalid_request) else."""
    content_type = request.content_type or ""
    if content_type == "application/json":
        if len(request.body) > MAX_FORM_BYTES:
            raise DeviceFlowError("invalid_request", "Request body too large.")
        try:
            data = json.loads(request.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise DeviceFlowError("invalid_request", "The body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise DeviceFlowError("invalid_request", "The body must be a JSON object.")
        return {k: v for k, v in data.items() if isinstance(v, str)}
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return {k: request.POST.get(k, "") for k in request.POST}
    raise DeviceFlowError(
        "invalid_request", "Send application/x-www-form-urlencoded (or JSON) parameters."
    )


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise DeviceFlowError("invalid_request", f"Missing parameter: {name}.")
    return value


def _over_device_code_limit(request: HttpRequest) -> int:
    """Seconds to wait when this address asked for too many codes this minute, else 0."""
    now = clock.timestamp()
    window = int(now // 60)
    key = f"devicecode:{throttle.client_address(request.META)}:{window}"
    cache.add(key, 0, 61)
    try:
        count = cache.incr(key)
    except ValueError:
        cache.set(key, 1, 61)
        count = 1
    if count > DEVICE_CODES_PER_MINUTE:
        return max(1, math.ceil((window + 1) * 60 - now))
    return 0


@csrf_exempt
@require_POST
def device_code(request: HttpRequest) -> HttpResponse:
    """RFC 8628 §3.1-3.2: a device code, a user code and where to enter it."""
    try:
        params = _params(request)
        client_id = _required(params, "client_id")
    except DeviceFlowError as exc:
        return _oauth_error(exc.error, exc.description)
    wait = _over_device_code_limit(request)
    if wait:
        response = _oauth_error(
            "slow_down", f"Too many device codes from your address; retry after {wait} s.", 429
        )
        response["Retry-After"] = str(wait)
        return response
    created = device_authorization_create(
        client_id=client_id,
        device_name=params.get("device_name", ""),
        origin=Origin.of(request),
    )
    base = public_base(request)
    authorization = created.authorization
    response = JsonResponse(
        {
            "device_code": created.device_code,
            "user_code": created.user_code,
            "verification_uri": f"{base}/device",
            "verification_uri_complete": f"{base}/device?user_code={created.user_code}",
            "expires_in": int(
                (authorization.expires_at - authorization.created_at).total_seconds()
            ),
            "interval": authorization.interval,
        }
    )
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt
@require_POST
def token(request: HttpRequest) -> HttpResponse:
    """RFC 8628 §3.4-3.5 (device code grant) and RFC 6749 §6 (refresh, rotated)."""
    try:
        params = _params(request)
        grant_type = _required(params, "grant_type")
        client_id = _required(params, "client_id")
        if grant_type == DEVICE_CODE_GRANT:
            issued = device_token_exchange(
                device_code=_required(params, "device_code"), client_id=client_id
            )
        elif grant_type == "refresh_token":
            issued = device_token_refresh(
                refresh_token=_required(params, "refresh_token"), client_id=client_id
            )
        else:
            raise DeviceFlowError(
                "unsupported_grant_type",
                f"Supported grant types: {DEVICE_CODE_GRANT}, refresh_token.",
            )
    except DeviceFlowError as exc:
        return _oauth_error(exc.error, exc.description)
    response = JsonResponse(issued.as_response())
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


# --- The /device page -------------------------------------------------------------------------


def _user_code_failed(request: HttpRequest) -> None:
    key = f"usercodefail:{request.user.pk}"
    cache.add(key, 0, USER_CODE_FAILURE_WINDOW)
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, 1, USER_CODE_FAILURE_WINDOW)


def _user_code_blocked(request: HttpRequest) -> bool:
    return (cache.get(f"usercodefail:{request.user.pk}") or 0) >= USER_CODE_FAILURES


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def device_page(request: HttpRequest) -> HttpResponse:
    """Enter (or follow a link with) a user code, see which device asks, approve or deny."""
    source = request.POST if request.method == "POST" else request.GET
    user_code = source.get("user_code", "").strip()[:32]
    context: dict = {"user_code": user_code}
    if not user_code:
        return render(request, "device/index.html", context)
    if _user_code_blocked(request):
        context["error"] = "Too many wrong codes: wait a few minutes and try again."
        return render(request, "device/index.html", context, status=429)
    authorization = device_authorization_pending(user_code)
    if authorization is None:
        _user_code_failed(request)
        context["error"] = (
            "No device is waiting for this code: it may have expired, been used or been mistyped."
        )
        return render(request, "device/index.html", context, status=404)
    decision = request.POST.get("decision") if request.method == "POST" else None
    if decision in ("approve", "deny"):
        decided = device_authorization_decide(
            authorization_id=authorization.pk,
            user=request.user,
            approve=decision == "approve",
            origin=Origin.of(request),
        )
        if decided is None:
            context["error"] = "This request is no longer waiting for a decision."
            return render(request, "device/index.html", context, status=409)
        return render(request, "device/done.html", {"authorization": decided})
    context["authorization"] = authorization
    return render(request, "device/index.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def device_revoke_page(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: confirm; POST: revoke one of the user's devices (someone else's is a 404)."""
    device = get_object_or_404(Device, pk=pk, user=request.user)
    if request.method == "POST":
        device_revoke(device=device, actor=request.user, origin=Origin.of(request))
        messages.success(request, f"Device “{device.name}” signed out.")
        return redirect("keys-page")
    return render(request, "device/revoke.html", {"device": device})


@never_cache
@login_required
@require_POST
def logout_everywhere_view(request: HttpRequest) -> HttpResponse:
    """End every session, JWT and device of the signed-in user, this session included."""
    logout_everywhere(user=request.user, origin=Origin.of(request))
    logout(request)
    return redirect(settings.LOGOUT_REDIRECT_URL)


def tool_download(request: HttpRequest, name: str) -> HttpResponse:
    """The Claude Code helper scripts, as shipped in tools/ (no secret in them)."""
    if name not in SHIPPED_TOOLS:
        raise Http404
    path = TOOLS_DIR / name
    if not path.is_file():
        raise Http404
    return FileResponse(
        path.open("rb"), as_attachment=True, filename=name, content_type="text/x-python"
    )
