"""The shipped model map: every Claude model the anthropic SDK (2.14) lists that Bedrock serves.

Rows go in release order, so the newest model gets the highest id (GET /v1/models lists newest
first). Dated names (claude-haiku-4-5-20251001) are the canonical ids of the older models; the
short names are their aliases. Bedrock ids are dated "-v1:0" up to Opus 4.5, then
"anthropic.claude-opus-4-6-v1", then "anthropic.claude-<family>-<version>" (CLIENTS.md). The
SDK's claude-mythos-5-1 and -5-2 ship inactive (Bedrock's catalogue has no such model yet: an
admin turns them on when it does); claude-mythos-preview is not served on Bedrock at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class DefaultAlias:
    anthropic_name: str
    bedrock_model_id: str
    display_name: str
    released_at: date | None = None
    is_active: bool = True


def _dated(alias: str, dated: str, bedrock_model_id: str, display_name: str):
    released = date(int(dated[-8:-4]), int(dated[-4:-2]), int(dated[-2:]))
    return (
        DefaultAlias(dated, bedrock_model_id, display_name, released),
        DefaultAlias(alias, bedrock_model_id, display_name, released),
    )


DEFAULT_ALIASES: tuple[DefaultAlias, ...] = (
    *_dated(
        "claude-opus-4-0",
        "claude-opus-4-20250514",
        "anthropic.claude-opus-4-20250514-v1:0",
        "Claude Opus 4",
    ),
    *_dated(
        "claude-sonnet-4-0",
        "claude-sonnet-4-20250514",
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "Claude Sonnet 4",
    ),
    *_dated(
        "claude-opus-4-1",
        "claude-opus-4-1-20250805",
        "anthropic.claude-opus-4-1-20250805-v1:0",
        "Claude Opus 4.1",
    ),
    *_dated(
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "Claude Sonnet 4.5",
    ),
    *_dated(
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        "Claude Haiku 4.5",
    ),
    *_dated(
        "claude-opus-4-5",
        "claude-opus-4-5-20251101",
        "anthropic.claude-opus-4-5-20251101-v1:0",
        "Claude Opus 4.5",
    ),
    DefaultAlias("claude-opus-4-6", "anthropic.claude-opus-4-6-v1", "Claude Opus 4.6"),
    DefaultAlias("claude-sonnet-4-6", "anthropic.claude-sonnet-4-6", "Claude Sonnet 4.6"),
    DefaultAlias("claude-opus-4-7", "anthropic.claude-opus-4-7", "Claude Opus 4.7"),
    DefaultAlias("claude-opus-4-8", "anthropic.claude-opus-4-8", "Claude Opus 4.8"),
    DefaultAlias("claude-opus-5", "anthropic.claude-opus-5", "Claude Opus 5"),
    DefaultAlias("claude-mythos-5", "anthropic.claude-mythos-5", "Claude Mythos 5"),
    DefaultAlias("claude-fable-5", "anthropic.claude-fable-5", "Claude Fable 5"),
    DefaultAlias("claude-sonnet-5", "anthropic.claude-sonnet-5", "Claude Sonnet 5"),
    DefaultAlias(
        "claude-mythos-5-1", "anthropic.claude-mythos-5-1", "Claude Mythos 5.1", is_active=False
    ),
    DefaultAlias("claude-opus-5-5", "anthropic.claude-opus-5-5", "Claude Opus 5.5"),
    DefaultAlias("claude-fable-5-1", "anthropic.claude-fable-5-1", "Claude Fable 5.1"),
    DefaultAlias("claude-sonnet-5-5", "anthropic.claude-sonnet-5-5", "Claude Sonnet 5.5"),
    DefaultAlias("claude-haiku-5-5", "anthropic.claude-haiku-5-5", "Claude Haiku 5.5"),
    DefaultAlias(
        "claude-mythos-5-2", "anthropic.claude-mythos-5-2", "Claude Mythos 5.2", is_active=False
    ),
    DefaultAlias("claude-fable-5-2", "anthropic.claude-fable-5-2", "Claude Fable 5.2"),
)


def model_aliases_install_defaults(*, model=None) -> int:
    """Adds the shipped aliases that are missing (never overwrites an edit); returns how many.

    `model` is the migration's historical ModelAlias; tests whose database was flushed
    (transactional tests) call it without one to get the defaults back.
    """
    if model is None:
        from gateway.models import ModelAlias as model
    created = 0
    for alias in DEFAULT_ALIASES:
        _, was_created = model.objects.get_or_create(
            anthropic_name=alias.anthropic_name,
            defaults={
                "bedrock_model_id": alias.bedrock_model_id,
                "display_name": alias.display_name,
                "released_at": alias.released_at,
                "is_active": alias.is_active,
            },
        )
        created += was_created
    if created and model.__module__ == "gateway.models":
        from gateway.model_map import model_map_invalidate

        model_map_invalidate()
    return created
