from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save


def _invalidate(**kwargs) -> None:
    from costs.pricing import price_cache_invalidate

    price_cache_invalidate()


class CostsConfig(AppConfig):
    name = "costs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Cache invalidation, not business flow: any write to a price (services, admin, a
        # test's ORM call) and any flush/migrate must drop the in-memory price table.
        from costs.models import ModelPrice

        post_save.connect(_invalidate, sender=ModelPrice, dispatch_uid="costs_price_saved")
        post_delete.connect(_invalidate, sender=ModelPrice, dispatch_uid="costs_price_deleted")
        post_migrate.connect(_invalidate, dispatch_uid="costs_post_migrate")
