"""Shipped model map: every Claude model the anthropic SDK (2.14) lists that Bedrock serves.

Rows go in release order, so the newest model gets the highest id (GET /v1/models lists newest
first). Dated names (claude-haiku-4-5-20251001) are the canonical ids of the older models; the
short names are their aliases. Bedrock ids: dated "-v1:0" up to Opus 4.5, "anthropic.claude-opus-
4-6-v1", then "anthropic.claude-<family>-<version>" (CLIENTS.md "Model ids"). The SDK's
claude-mythos-5-1 and -5-2 are shipped inactive (Bedrock's catalogue has no such model yet: an
admin turns them on when it does); claude-mythos-preview is not served on Bedrock.
"""

import datetime

from django.db import migrations

OLDER = [
    # (short alias, dated canonical name, Bedrock base id, display name)
    ("claude-opus-4-0", "claude-opus-4-20250514", "anthropic.claude-opus-4-20250514-v1:0",
     "Claude Opus 4"),
    ("claude-sonnet-4-0", "claude-sonnet-4-20250514", "anthropic.claude-sonnet-4-20250514-v1:0",
     "Claude Sonnet 4"),
    ("claude-opus-4-1", "claude-opus-4-1-20250805", "anthropic.claude-opus-4-1-20250805-v1:0",
     "Claude Opus 4.1"),
    ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929",
     "anthropic.claude-sonnet-4-5-20250929-v1:0", "Claude Sonnet 4.5"),
    ("claude-haiku-4-5", "claude-haiku-4-5-20251001", "anthropic.claude-haiku-4-5-20251001-v1:0",
     "Claude Haiku 4.5"),
    ("claude-opus-4-5", "claude-opus-4-5-20251101", "anthropic.claude-opus-4-5-20251101-v1:0",
     "Claude Opus 4.5"),
]

NEWER = [
    # (name, Bedrock base id, display name, active)
    ("claude-opus-4-6", "anthropic.claude-opus-4-6-v1", "Claude Opus 4.6", True),
    ("claude-sonnet-4-6", "anthropic.claude-sonnet-4-6", "Claude Sonnet 4.6", True),
    ("claude-opus-4-7", "anthropic.claude-opus-4-7", "Claude Opus 4.7", True),
    ("claude-opus-4-8", "anthropic.claude-opus-4-8", "Claude Opus 4.8", True),
    ("claude-opus-5", "anthropic.claude-opus-5", "Claude Opus 5", True),
    ("claude-mythos-5", "anthropic.claude-mythos-5", "Claude Mythos 5", True),
    ("claude-fable-5", "anthropic.claude-fable-5", "Claude Fable 5", True),
    ("claude-sonnet-5", "anthropic.claude-sonnet-5", "Claude Sonnet 5", True),
    ("claude-mythos-5-1", "anthropic.claude-mythos-5-1", "Claude Mythos 5.1", False),
    ("claude-opus-5-5", "anthropic.claude-opus-5-5", "Claude Opus 5.5", True),
    ("claude-fable-5-1", "anthropic.claude-fable-5-1", "Claude Fable 5.1", True),
    ("claude-sonnet-5-5", "anthropic.claude-sonnet-5-5", "Claude Sonnet 5.5", True),
    ("claude-haiku-5-5", "anthropic.claude-haiku-5-5", "Claude Haiku 5.5", True),
    ("claude-mythos-5-2", "anthropic.claude-mythos-5-2", "Claude Mythos 5.2", False),
    ("claude-fable-5-2", "anthropic.claude-fable-5-2", "Claude Fable 5.2", True),
]


def _rows():
    for alias, dated, bedrock_id, display in OLDER:
        released = datetime.datetime.strptime(dated[-8:], "%Y%m%d").date()  # noqa: DTZ007
        yield dated, bedrock_id, display, released, True
        yield alias, bedrock_id, display, released, True
    for name, bedrock_id, display, active in NEWER:
        yield name, bedrock_id, display, None, active


def add_defaults(apps, schema_editor):
    ModelAlias = apps.get_model("gateway", "ModelAlias")
    for name, bedrock_id, display, released, active in _rows():
        ModelAlias.objects.get_or_create(
            anthropic_name=name,
            defaults={
                "bedrock_model_id": bedrock_id,
                "display_name": display,
                "released_at": released,
                "is_active": active,
            },
        )


def remove_defaults(apps, schema_editor):
    ModelAlias = apps.get_model("gateway", "ModelAlias")
    ModelAlias.objects.filter(anthropic_name__in=[row[0] for row in _rows()]).delete()


class Migration(migrations.Migration):
    dependencies = [("gateway", "0001_initial")]

    operations = [migrations.RunPython(add_defaults, remove_defaults)]
