"""The API's documentation pages: Swagger UI and Redoc from static files, behind sign-in.

Both are served from drf-spectacular-sidecar's copies under /static/ (no CDN) and carry no
inline script. Swagger UI lives under the site's Content-Security-Policy unchanged; Redoc
needs inline styles and a blob: worker, which its page alone allows (scripts stay 'self').
The pages need a signed-in session (anonymous: redirected to sign-in); the schema they read,
/api/schema, needs any credential (session, API key or JWT).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated

from config.security import POLICY


class SwaggerView(SpectacularSwaggerSplitView):
    """Swagger UI; its start-up script is a same-origin file (`?script`), not inline."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticated]
    template_name = "apidocs/swagger_ui.html"


# Redoc styles itself with inline <style> elements (styled-components) and runs its search in
# a blob: worker: this page alone relaxes styles (never scripts) and allows that worker.
REDOC_POLICY = POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'") + (
    "; worker-src 'self' blob:"
)


class RedocView(SpectacularRedocView):
    """Redoc, started by its `<redoc spec-url>` element: no inline script, no web fonts."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticated]
    template_name = "apidocs/redoc.html"

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Content-Security-Policy"] = REDOC_POLICY
        return response


def swagger_view():  # a view function
    return login_required(SwaggerView.as_view(url_name="api-schema"))


def redoc_view():  # a view function
    return login_required(RedocView.as_view(url_name="api-schema"))
