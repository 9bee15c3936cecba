"""The cap policy replaces the default caps copied into each user's rows: a copied row that
still equals the defaults it was copied from is deleted (the policy now applies to that user
live); a row an administrator changed since stays, as that user's administrator cap."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# The built-in daily defaults before the policy (what a deployment that set none copied).
OLD_DAILY_DEFAULTS = {"max_requests": 1000, "max_tokens": 100000, "max_cost_cents": 1000}


def delete_copied_defaults(apps, schema_editor):
    UserCapConfig = apps.get_model("caps", "UserCapConfig")
    UserCapDefaults = apps.get_model("caps", "UserCapDefaults")
    conf = settings.GATEWAY.usage_caps
    copied_to = UserCapDefaults.objects.values("user_id")
    admin_caps = UserCapConfig.objects.filter(set_by="admin", user_id__in=copied_to)
    configured = {
        "max_requests": conf.default_daily_requests,
        "max_tokens": conf.default_daily_tokens,
        "max_cost_cents": conf.default_daily_cost_cents,
    }
    for limits in (OLD_DAILY_DEFAULTS, configured):
        if any(value is not None for value in limits.values()):
            admin_caps.filter(cap_type="daily", **limits).delete()
    if conf.default_session_cost_cents is not None:
        admin_caps.filter(
            cap_type="session",
            max_requests=None,
            max_tokens=None,
            max_cost_cents=conf.default_session_cost_cents,
        ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("caps", "0005_policy_teams"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(delete_copied_defaults, migrations.RunPython.noop),
        migrations.DeleteModel(name="UserCapDefaults"),
        migrations.AlterField(
            model_name="caplease",
            name="user",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
