"""Routes: each app owns its urls; the proxy (/bedrock, /anthropic) lives in gateway."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from config.apidocs import redoc_view, swagger_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("api/schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs", swagger_view(), name="api-docs"),
    path("api/redoc", redoc_view(), name="api-redoc"),
    path("", include("accounts.urls")),
    path("", include("costs.urls")),
    path("", include("caps.urls")),
    path("", include("usage.urls")),
    path("", include("gateway.urls")),
]

handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"
