"""Shipped model map (gateway/model_defaults.py): adds the missing defaults, never overwrites."""

from django.db import migrations

from gateway.model_defaults import DEFAULT_ALIASES, model_aliases_install_defaults


def add_defaults(apps, schema_editor):
    model_aliases_install_defaults(model=apps.get_model("gateway", "ModelAlias"))


def remove_defaults(apps, schema_editor):
    ModelAlias = apps.get_model("gateway", "ModelAlias")
    names = [alias.anthropic_name for alias in DEFAULT_ALIASES]
    ModelAlias.objects.filter(anthropic_name__in=names).delete()


class Migration(migrations.Migration):
    dependencies = [("gateway", "0001_initial")]

    operations = [migrations.RunPython(add_defaults, remove_defaults)]
