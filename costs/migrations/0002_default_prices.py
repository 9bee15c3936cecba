"""Ship the default prices (costs/defaults.py: Anthropic list prices late 2026, CLIENTS.md)."""

from django.db import migrations


def install(apps, schema_editor):
    from costs.defaults import default_rows

    ModelPrice = apps.get_model("costs", "ModelPrice")
    for row in default_rows():
        key = {name: row[name] for name in ("model_id", "scope", "region", "effective_from")}
        values = {name: value for name, value in row.items() if name not in key}
        ModelPrice.objects.update_or_create(**key, defaults=values)


class Migration(migrations.Migration):
    dependencies = [("costs", "0001_initial")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
