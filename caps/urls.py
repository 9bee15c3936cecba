from django.urls import path

from caps import api

urlpatterns = [
    path("api/usage/caps", api.CapListCreateView.as_view(), name="api-caps"),
    path("api/usage/caps/status", api.CapStatusView.as_view(), name="api-caps-status"),
    path("api/usage/caps/<int:pk>", api.CapDetailView.as_view(), name="api-cap-detail"),
]
