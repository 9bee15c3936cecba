from django.urls import path

from accounts import api, device_views, views

urlpatterns = [
    path("api/keys", api.ApiKeyListCreateView.as_view(), name="api-keys"),
    path("api/keys/<int:pk>", api.ApiKeyDetailView.as_view(), name="api-key-detail"),
    path("api/token", api.TokenObtainView.as_view(), name="api-token"),
    path("api/token/refresh", api.TokenRefreshView.as_view(), name="api-token-refresh"),
    path("token", views.token_page, name="token-page"),
    path("keys", views.keys_page, name="keys-page"),
    path("keys/<int:pk>/revoke", views.key_revoke, name="key-revoke"),
    # Device sign-in (RFC 8628) and what goes with it: accounts.device_views.
    path("oauth/device/code", device_views.device_code, name="oauth-device-code"),
    path("oauth/token", device_views.token, name="oauth-token"),
    path("device", device_views.device_page, name="device-page"),
    path("devices/<int:pk>/revoke", device_views.device_revoke_page, name="device-revoke"),
    path(
        "accounts/logout-everywhere",
        device_views.logout_everywhere_view,
        name="logout-everywhere",
    ),
    path("tools/<str:name>", device_views.tool_download, name="tool-download"),
]
