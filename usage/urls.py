from django.urls import path

from usage import api, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("usage", views.usage_page, name="usage-page"),
    path("sessions", views.sessions_page, name="sessions-page"),
    path("usage/export.csv", views.usage_export_csv, name="usage-export"),
    path("api/usage/records", api.RecordListView.as_view(), name="usage-records"),
    path("api/usage/summary", api.SummaryView.as_view(), name="usage-summary"),
    path("api/usage/sessions", api.SessionListView.as_view(), name="usage-sessions"),
    path("api/admin/usage/records", api.AdminRecordListView.as_view(), name="admin-usage-records"),
    path("api/admin/usage/summary", api.AdminSummaryView.as_view(), name="admin-usage-summary"),
    path(
        "api/admin/usage/chargeback.csv",
        api.ChargebackCsvView.as_view(),
        name="admin-usage-chargeback",
    ),
    path(
        "api/admin/usage/unpriced-models",
        api.UnpricedModelsView.as_view(),
        name="admin-usage-unpriced-models",
    ),
]
