from django.urls import path

from gateway import health

urlpatterns = [
    path("health", health.health, name="health"),
]
