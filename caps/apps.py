from django.apps import AppConfig


class CapsConfig(AppConfig):
    name = "caps"
    default_auto_field = "django.db.models.BigAutoField"
