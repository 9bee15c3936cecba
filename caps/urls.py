from django.urls import path

from caps import api, views

urlpatterns = [
    path("caps", views.caps_page, name="caps-page"),
    path("caps/<int:pk>/edit", views.cap_edit, name="cap-edit"),
    path("caps/<int:pk>/delete", views.cap_remove, name="cap-delete"),
    path("api/usage/caps", api.CapListCreateView.as_view(), name="api-caps"),
    path("api/usage/caps/status", api.CapStatusView.as_view(), name="api-caps-status"),
    path("api/usage/caps/<int:pk>", api.CapDetailView.as_view(), name="api-cap-detail"),
]
