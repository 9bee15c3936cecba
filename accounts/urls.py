from django.urls import path

from accounts import api, views

urlpatterns = [
    path("api/keys", api.ApiKeyListCreateView.as_view(), name="api-keys"),
    path("api/keys/<int:pk>", api.ApiKeyDetailView.as_view(), name="api-key-detail"),
    path("api/token", api.TokenObtainView.as_view(), name="api-token"),
    path("api/token/refresh", api.TokenRefreshView.as_view(), name="api-token-refresh"),
    path("token", views.token_page, name="token-page"),
    path("keys", views.keys_page, name="keys-page"),
    path("keys/<int:pk>/revoke", views.key_revoke, name="key-revoke"),
]
