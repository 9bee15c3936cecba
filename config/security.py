"""Content-Security-Policy for the HTML pages: scripts and styles from our own origin only.

The dashboard has no inline script or style (its JavaScript and CSS are files under static/), so
an injected `<script>` or `style=` attribute would not run even if escaping ever failed.
Sync and async capable: the proxy's async views pass through it without a thread hop.
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'none'",
    ]
)


def _apply(request, response):
    content_type = response.get("Content-Type", "")
    # No exemptions: the API docs pages (config/apidocs.py) are static files too.
    if content_type.startswith("text/html") and "Content-Security-Policy" not in response:
        response["Content-Security-Policy"] = POLICY
    return response


class ContentSecurityPolicyMiddleware:
    """Adds the policy to every HTML response that has none."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        return _apply(request, self.get_response(request))

    async def _acall(self, request):
        return _apply(request, await self.get_response(request))
