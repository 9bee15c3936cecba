"""Authenticated credentials remembered between requests, and the revocation generation.

Two backends behind one small interface, chosen like the counter store:

- **Redis** (``REDIS_URL`` set): one cache shared by every process. A warm authentication is one
  Redis GET and no database query. Revocation deletes the entry, so every process sees it at once.
  A load that raced with a revocation (read the database before the revocation committed, wrote
  the cache after its delete) is caught by the generation: a loader reads the generation before
  the database and again after writing; if it moved, it deletes what it wrote.
- **Embedded** (no Redis): Django's per-process cache (locmem). Another process cannot delete
  our entries, so every entry carries the generation it was loaded at and every hit reads the
  current generation from the database — one single-row primary-key read — and reloads when it
  moved. That read is the whole cost of a warm authentication on the embedded default.

On a Redis Cluster (``redis.cluster``) every operation here is a single-key command except
``delete`` (RedisCluster sends one DEL per slot: the entries of one revocation may live on
different masters; each is gone before ``delete`` returns) and ``clear`` (SCAN on every master).

Entries are plain JSON-able dicts; the Redis backend stores JSON (never pickle) so that the
async path can read it with ``redis.asyncio`` without going through a thread.

Redis unreachable: a read is a miss and a write is skipped, so authentication falls back to the
database (one query per request) instead of failing. Revocation (``delete``, ``bump``) is the
exception: it raises CredentialCacheUnavailable (503), because a revocation that could not reach
the shared cache must not report success while other processes may still hold the entry.
"""

from __future__ import annotations

import json
from typing import Any

import redis
import redis.asyncio as aredis
from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction
from django.db.models import F

from accounts.models import AuthGeneration
from config import redis_clients
from config.db import in_db_thread

# What a Redis client may raise when the server is down or the connection broke.
REDIS_ERRORS = (redis.RedisError, OSError)

KEY_PREFIX = "auth:"
GENERATION_KEY = f"{KEY_PREFIX}generation"


def key_entry_name(key_hash: str) -> str:
    return f"{KEY_PREFIX}key:{key_hash}"


def device_entry_name(token_hash: str) -> str:
    """A device access token's entry (accounts.device)."""
    return f"{KEY_PREFIX}device:{token_hash}"


def user_entry_name(user_id: int) -> str:
    return f"{KEY_PREFIX}user:{user_id}"


class CredentialCacheUnavailable(Exception):
    """The shared credential cache (Redis) could not be reached for a revocation."""

    message = "Credentials cannot be revoked right now (cache unavailable); try again."


# A generation no real one equals: an entry loaded while Redis was unreachable never survives
# set_unless_moved once Redis answers again.
UNKNOWN_GENERATION = -1


class LocalCredentialCache:
    """Per-process entries (Django's locmem cache), checked against the database generation."""

    checks_generation_on_hit = True

    def __init__(self) -> None:
        self._cache = caches["default"]

    def get(self, name: str) -> dict[str, Any] | None:
        return self._cache.get(name)

    async def aget(self, name: str) -> dict[str, Any] | None:
        # Process memory: no I/O, so no thread hop.
        return self._cache.get(name)

    def set(self, name: str, entry: dict[str, Any], ttl: int) -> None:
        self._cache.set(name, entry, ttl)

    def set_unless_moved(self, name: str, entry: dict[str, Any], ttl: int) -> None:
        # Every hit compares the entry's generation with the database's: a stale write is
        # harmless here.
        self.set(name, entry, ttl)

    def delete(self, names: list[str]) -> None:
        self._cache.delete_many(names)

    def generation(self) -> int:
        value = AuthGeneration.objects.filter(pk=1).values_list("value", flat=True).first()
        return value or 0

    async def ageneration(self) -> int:
        return await in_db_thread(self.generation)

    def bump(self) -> None:
        # Inside the caller's transaction: the new generation commits with the revocation.
        if not AuthGeneration.objects.filter(pk=1).update(value=F("value") + 1):
            _generation, created = AuthGeneration.objects.get_or_create(pk=1, defaults={"value": 1})
            if not created:
                AuthGeneration.objects.filter(pk=1).update(value=F("value") + 1)

    def clear(self) -> None:
        self._cache.clear()


class RedisCredentialCache:
    """Entries shared by all processes in Redis, as JSON; deleted at revocation.

    Reads and writes never raise: Redis unreachable is a miss (the database answers)."""

    checks_generation_on_hit = False

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis_clients.sync_client(url)

    def _async_client(self) -> aredis.Redis | redis_clients.ThreadedCluster:
        return redis_clients.async_client(self.url)

    @staticmethod
    def _decode(raw: bytes | str | None) -> dict[str, Any] | None:
        return json.loads(raw) if raw else None

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self._decode(self.client.get(name))
        except REDIS_ERRORS as exc:
            redis_clients.warn_unavailable("credential cache", exc)
            return None

    async def aget(self, name: str) -> dict[str, Any] | None:
        try:
            return self._decode(await self._async_client().get(name))
        except REDIS_ERRORS as exc:
            redis_clients.warn_unavailable("credential cache", exc)
            return None

    def set(self, name: str, entry: dict[str, Any], ttl: int) -> None:
        try:
            self.client.set(name, json.dumps(entry), ex=ttl)
        except REDIS_ERRORS as exc:
            redis_clients.warn_unavailable("credential cache", exc)

    def set_unless_moved(self, name: str, entry: dict[str, Any], ttl: int) -> None:
        """Write an entry loaded at generation ``entry["gen"]``; undo it if a revocation ran
        (an entry loaded while the generation could not be read is not written)."""
        if entry["gen"] == UNKNOWN_GENERATION:
            return  # loaded while Redis was unreachable: nothing to check it against
        try:
            self.client.set(name, json.dumps(entry), ex=ttl)
            if self.generation() != entry["gen"]:
                self.client.delete(name)
        except REDIS_ERRORS as exc:
            redis_clients.warn_unavailable("credential cache", exc)

    def delete(self, names: list[str]) -> None:
        if names:
            try:
                self.client.delete(*names)
            except REDIS_ERRORS as exc:
                raise CredentialCacheUnavailable(CredentialCacheUnavailable.message) from exc

    def generation(self) -> int:
        try:
            return int(self.client.get(GENERATION_KEY) or 0)
        except REDIS_ERRORS as exc:
            redis_clients.warn_unavailable("credential cache", exc)
            return UNKNOWN_GENERATION

    async def ageneration(self) -> int:
        try:
            return int(await self._async_client().get(GENERATION_KEY) or 0)
        except REDIS_ERRORS as exc:
            redis_clients.warn_unavailable("credential cache", exc)
            return UNKNOWN_GENERATION

    def bump(self) -> None:
        try:
            self.client.incr(GENERATION_KEY)
        except REDIS_ERRORS as exc:
            raise CredentialCacheUnavailable(CredentialCacheUnavailable.message) from exc

    def clear(self) -> None:
        for name in self.client.scan_iter(match=f"{KEY_PREFIX}*", count=1000):
            self.client.delete(name)


_cache: LocalCredentialCache | RedisCredentialCache | None = None


def get_credential_cache() -> LocalCredentialCache | RedisCredentialCache:
    """The configured backend: Redis when ``REDIS_URL`` is set, else per-process memory."""
    global _cache
    url = settings.GATEWAY.redis.url
    if _cache is None or getattr(_cache, "url", None) != url:
        _cache = RedisCredentialCache(url) if url else LocalCredentialCache()
    return _cache


def credentials_invalidate(names: list[str]) -> None:
    """Forget entries and move the generation, now and again once the transaction commits.

    Now: so that this process (and, on Redis, every process) stops accepting at once.
    After commit: so that a process that reloaded the old rows between now and the commit
    cannot keep them.
    """
    cache = get_credential_cache()

    def run() -> None:
        cache.bump()
        cache.delete(names)

    if isinstance(cache, LocalCredentialCache):
        # The database generation commits with the revocation itself.
        run()
        return
    run()
    if connection.in_atomic_block:
        transaction.on_commit(run)
