"""Register the usage jobs in django-celery-beat (editable in admin afterwards)."""

from django.db import migrations


def install(apps, schema_editor):
    from usage.services import schedules_install

    schedules_install(apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0002_records_summaries"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
