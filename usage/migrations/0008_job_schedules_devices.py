"""Register the device sign-in purge (existing entries stay)."""

from django.db import migrations


def install(apps, schema_editor):
    from usage.services import schedules_install

    schedules_install(apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0007_usagesummary_team"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
