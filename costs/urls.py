from django.urls import path

from costs import api

urlpatterns = [
    path("api/costs", api.PriceListApi.as_view(), name="costs-list"),
    path("api/costs/import", api.PriceImportApi.as_view(), name="costs-import"),
    path("api/costs/<int:price_id>", api.PriceDetailApi.as_view(), name="costs-detail"),
]
