from django.urls import path

from usage import api

urlpatterns = [
    path("api/usage/records", api.RecordListView.as_view(), name="usage-records"),
    path("api/usage/summary", api.SummaryView.as_view(), name="usage-summary"),
    path("api/admin/usage/records", api.AdminRecordListView.as_view(), name="admin-usage-records"),
    path("api/admin/usage/summary", api.AdminSummaryView.as_view(), name="admin-usage-summary"),
    path(
        "api/admin/usage/unpriced-models",
        api.UnpricedModelsView.as_view(),
        name="admin-usage-unpriced-models",
    ),
]
