"""Behind a TLS-terminating proxy: the public URL's port, and a CSRF failure that says why.

`server.public_url` (config/conf.py) drives the settings (allowed hosts, trusted origins, the
proxy's X-Forwarded-Proto, Secure cookies, HSTS). Two pieces of code complete it:

- `PublicHostMiddleware`: a proxy configured with nginx's usual `proxy_set_header Host $host`
  forwards the host name without its port. When the public URL has a non-default port
  (https://gateway.example.com:8443), the absolute URLs Django and allauth build (the OAuth
  callback sent to the identity provider) would lose it. A request that names exactly the
  public host, without a port, on the public scheme, gets the public URL's host and port.
- `csrf_failure` (CSRF_FAILURE_VIEW): instead of Django's bare 403, a page (JSON under /api)
  naming the origin the browser sent, how the gateway saw the request, and the setting to set:
  behind a TLS proxy with no public URL configured, every form POST fails this way.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost, MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

PUBLIC_URL_ENV = "GATEWAY_SERVER__PUBLIC_URL"
TRUSTED_ORIGINS_ENV = "GATEWAY_SERVER__CSRF_TRUSTED_ORIGINS"


class PublicHostMiddleware:
    async_capable = True
    sync_capable = True

    def __init__(self, get_response):
        server = settings.GATEWAY.server
        if not server.public_url:
            raise MiddlewareNotUsed
        parts = urlsplit(server.public_url)
        self.scheme = parts.scheme
        self.bare_host = server.public_host.lower()
        self.netloc = parts.netloc
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _adjust(self, request: HttpRequest) -> None:
        if self.netloc == self.bare_host:  # the default port: nothing to put back
            return
        host = request.META.get("HTTP_HOST", "").lower()
        if host == self.bare_host and request.scheme == self.scheme:
            request.META["HTTP_HOST"] = self.netloc

    def __call__(self, request: HttpRequest):
        self._adjust(request)
        if self.is_async:
            return self._acall(request)
        return self.get_response(request)

    async def _acall(self, request: HttpRequest):
        return await self.get_response(request)


def _origin_seen(request: HttpRequest) -> str | None:
    origin = request.META.get("HTTP_ORIGIN")
    if origin and origin != "null":
        return origin
    referer = urlsplit(request.META.get("HTTP_REFERER", ""))
    if referer.scheme and referer.netloc:
        return f"{referer.scheme}://{referer.netloc}"
    return None


def _as_seen(request: HttpRequest) -> str:
    try:
        host = request.get_host()
    except DisallowedHost:
        host = request.META.get("HTTP_HOST", "")
    return f"{request.scheme}://{host}"


def explain(request: HttpRequest, reason: str) -> dict:
    """What went wrong, in words an operator (or a user to forward it) can act on."""
    server = settings.GATEWAY.server
    origin = _origin_seen(request)
    seen = _as_seen(request)
    context = {"origin": origin, "seen": seen, "reason": reason, "setting": None, "value": None}
    origin_problem = reason.startswith(("Origin checking failed", "Referer checking failed"))
    if origin_problem and not server.public_url:
        # The classic: a TLS-terminating proxy in front, and the gateway does not know it.
        if origin and origin.startswith("https://"):
            value = origin
        else:
            value = "https://" + seen.split("://", 1)[1]
        context.update(setting=PUBLIC_URL_ENV, value=value)
        context["message"] = (
            f"The form was sent from {origin or 'an unknown origin'}, but the gateway saw the "
            f"request as {seen}: it does not know its public address. Behind a TLS-terminating "
            f"proxy or load balancer, set {PUBLIC_URL_ENV} to {value} (server.public_url) and "
            "restart; the proxy must send X-Forwarded-Proto."
        )
    elif origin_problem:
        context.update(setting=TRUSTED_ORIGINS_ENV, value=origin)
        context["message"] = (
            f"The form was sent from {origin or 'an unknown origin'}, which is not this "
            f"gateway's public URL ({server.public_url}). Open the gateway at "
            f"{server.public_url}, or add {origin} to {TRUSTED_ORIGINS_ENV} "
            "(server.csrf_trusted_origins)."
        )
    elif server.public_https and not request.is_secure():
        context.update(setting=PUBLIC_URL_ENV, value=server.public_url)
        context["message"] = (
            f"The gateway's cookies are sent over https only ({PUBLIC_URL_ENV} is "
            f"{server.public_url}), but this request reached it as {seen}. Open "
            f"{server.public_url}; behind a proxy, it must send X-Forwarded-Proto: https."
        )
    else:
        context["message"] = (
            "The form's security token is missing or out of date (cookies blocked, or the "
            "page was open for a long time). Reload the page and try again."
        )
    return context


def csrf_body(request: HttpRequest, reason: str) -> dict:
    """The JSON answer (/api): `detail`, and `setting` when one would fix it."""
    context = explain(request, reason)
    body = {"detail": f"CSRF check failed. {context['message']}"}
    if context["setting"]:
        body["setting"] = context["setting"]
    return body


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if request.path.startswith("/api/") or request.path == "/api":
        return JsonResponse(csrf_body(request, reason), status=403)
    return render(request, "csrf_failure.html", explain(request, reason), status=403)
