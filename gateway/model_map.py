"""Anthropic model names -> Bedrock inference profiles, from the admin-editable ModelAlias table.

The hot path reads a per-process snapshot of the table, never the database when warm:
- every VERSION_CHECK_SECONDS the snapshot's version is compared with a version key in Django's
  cache; an admin edit (model_map_invalidate) writes a new version and drops this process's
  snapshot, so the edit is visible at once here and, on the shared Redis cache, in every other
  process within VERSION_CHECK_SECONDS;
- the embedded default's locmem cache is per process, so there a snapshot is also reloaded when
  older than LOCAL_MAX_AGE_SECONDS (another process's edit shows within a few seconds); on Redis
  MAX_AGE_SECONDS only catches edits made outside the admin (a shell, SQL);
- a cache that cannot be read (Redis down) is an unknown version: the snapshot is then reloaded
  from the database when older than LOCAL_MAX_AGE_SECONDS, as on the embedded default, and once
  the cache answers again its version differs, so the snapshot is reloaded at once.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import date

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache

from config import redis_clients
from config.db import in_db_thread

logger = logging.getLogger(__name__)

VERSION_KEY = "gateway:model_map:version"
# The version of a snapshot loaded while the cache could not be read (equal to no real one).
UNKNOWN_VERSION = object()
VERSION_CHECK_SECONDS = 1.0
LOCAL_MAX_AGE_SECONDS = 5.0
MAX_AGE_SECONDS = 300.0

# aws.model_prefix "auto": the geography of the configured region. Regions outside these
# geographies get the global profile, which Bedrock offers from most regions.
_GEOGRAPHIES = (("us-gov-", "us-gov."), ("us-", "us."), ("eu-", "eu."), ("ap-", "apac."))


@dataclass(frozen=True)
class ModelEntry:
    """One active alias as the hot path and GET /v1/models see it."""

    id: int
    anthropic_name: str
    bedrock_model_id: str
    display_name: str
    released_at: date | None


@dataclass(frozen=True)
class _Snapshot:
    by_name: dict[str, ModelEntry]
    version: object
    loaded_at: float
    # Whether it ages as a per-process cache's would (LOCAL_MAX_AGE_SECONDS): decided at load,
    # as looking the cache backend up costs ~0.1 ms a call.
    local: bool


class _State:
    snapshot: _Snapshot | None = None
    checked_at: float = 0.0


_state = _State()


def model_prefix(*, setting: str, region: str) -> str:
    """The inference-profile prefix ("us.", "global.", "") for aws.model_prefix and region."""
    value = setting.strip().rstrip(".")
    if value == "auto":
        for region_start, prefix in _GEOGRAPHIES:
            if region.startswith(region_start):
                return prefix
        return "global."
    if value in ("none", ""):
        return ""
    return f"{value}."


def is_bedrock_id(name: str) -> bool:
    """Whether a requested model is already a Bedrock id or ARN (used as it is)."""
    return "anthropic." in name or name.startswith("arn:")


def profile_id(bedrock_model_id: str) -> str:
    """A stored base id with the configured prefix; profile ids and ARNs are left as they are."""
    if not bedrock_model_id.startswith("anthropic."):
        return bedrock_model_id
    aws = settings.GATEWAY.aws
    return model_prefix(setting=aws.model_prefix, region=aws.region) + bedrock_model_id


def _max_age(local: bool) -> float:
    return LOCAL_MAX_AGE_SECONDS if local else MAX_AGE_SECONDS


def _needs_check(now: float) -> bool:
    snapshot = _state.snapshot
    return (
        snapshot is None
        or now - _state.checked_at >= VERSION_CHECK_SECONDS
        or now - snapshot.loaded_at >= _max_age(snapshot.local)
    )


def _load(version: object, now: float, local: bool) -> _Snapshot:
    from gateway.models import ModelAlias

    rows = ModelAlias.objects.filter(is_active=True).values_list(
        "id", "anthropic_name", "bedrock_model_id", "display_name", "released_at"
    )
    by_name = {row[1]: ModelEntry(*row) for row in rows}
    return _Snapshot(by_name=by_name, version=version, loaded_at=now, local=local)


def _cache_version() -> object:
    try:
        return cache.get(VERSION_KEY)
    except Exception as exc:  # django-redis raises its own ConnectionInterrupted
        redis_clients.warn_unavailable("model map", exc)
        return UNKNOWN_VERSION


def _refresh() -> _Snapshot:
    # Runs at most about once a second per process: a cache read, and a query only on change.
    now = time.monotonic()
    version = _cache_version()
    snapshot = _state.snapshot
    local = version is UNKNOWN_VERSION or isinstance(caches["default"], LocMemCache)
    if (
        snapshot is None
        or snapshot.version != version
        or now - snapshot.loaded_at >= _max_age(local)
    ):
        snapshot = _load(version, now, local)
        _state.snapshot = snapshot
    _state.checked_at = now
    return snapshot


def _snapshot() -> _Snapshot:
    snapshot = _state.snapshot
    if snapshot is None or _needs_check(time.monotonic()):
        return _refresh()
    return snapshot


async def _asnapshot() -> _Snapshot:
    snapshot = _state.snapshot
    if snapshot is None or _needs_check(time.monotonic()):
        return await in_db_thread(_refresh)
    return snapshot


def _resolve(snapshot: _Snapshot, name: str) -> str | None:
    if is_bedrock_id(name):
        return name
    entry = snapshot.by_name.get(name)
    return profile_id(entry.bedrock_model_id) if entry else None


def resolve_bedrock_model(name: str) -> str | None:
    """The Bedrock model id to call for an Anthropic model name; None if the name is unknown."""
    if is_bedrock_id(name):
        return name
    return _resolve(_snapshot(), name)


async def aresolve_bedrock_model(name: str) -> str | None:
    """resolve_bedrock_model for async views: touches no database or cache when warm."""
    if is_bedrock_id(name):
        return name
    return _resolve(await _asnapshot(), name)


def active_models() -> list[ModelEntry]:
    """The active aliases, newest entry first."""
    return sorted(_snapshot().by_name.values(), key=lambda entry: -entry.id)


async def aactive_models() -> list[ModelEntry]:
    """active_models for async views."""
    return sorted((await _asnapshot()).by_name.values(), key=lambda entry: -entry.id)


def model_map_invalidate() -> None:
    """Call after any change to ModelAlias rows: this process at once, others within seconds."""
    _state.snapshot = None
    try:
        cache.set(VERSION_KEY, uuid.uuid4().hex, timeout=None)
    except Exception as exc:  # django-redis raises its own ConnectionInterrupted
        # Other processes see the edit when their snapshot ages out (or the cache comes back).
        logger.warning("model map change not published (cache unavailable): %s", exc)
