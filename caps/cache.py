"""The caps each process caches per counter store, and how a cap change reaches every process.

A store's `caps_cache` holds, per owner (a user, or a team as `team_owner`), the caps read at a
configuration version, and under `POLICY_OWNER` the cap policy with when its version was last
checked. A cap write calls `cap_config_changed`: the owner's version moves in every store, so
every process's next reservation for the owner is answered "stale" and reloads (caps/rules.py).
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import transaction

from caps.policy import POLICY_OWNER, RECHECK_SECONDS, Policy, policy_load
from caps.rules import UserCaps, caps_load
from caps.store import CapStore, RedisCapStore, StoreDown, cap_store, open_stores, run_in_db_thread

logger = logging.getLogger(__name__)


def cap_config_changed(*, user_id: int) -> None:
    """A cap of this user changed: every process drops its cached caps on its next call.

    The embedded store's version row is written inside the caller's transaction (atomic with
    the change); Redis's version key once that transaction commits.
    """
    embedded = cap_store(embedded=True)
    embedded.set_version(user_id)
    _forget(user_id)

    def publish() -> None:
        _forget(user_id)
        for store in open_stores():
            if isinstance(store, RedisCapStore):
                try:
                    store.set_version(user_id)
                except StoreDown:
                    logger.warning("cap change for user %s not published: store down", user_id)

    if settings.GATEWAY.redis.url:
        cap_store()  # the configured Redis store gets the version even if not used yet
    transaction.on_commit(publish)


def _forget(user_id: int) -> None:
    for store in open_stores():
        if user_id == POLICY_OWNER:
            store.caps_cache.clear()  # every user's cached caps hold the policy's rules
        else:
            store.caps_cache.pop(user_id, None)


def caps_cached(store: CapStore, owner: int, policy: Policy) -> UserCaps | None:
    """The owner's cached caps, unless a user's were read with another policy."""
    caps = store.caps_cache.get(owner)
    if caps is None or (owner > 0 and caps.policy_version != policy.version):
        return None
    return caps


def caps_reload(store: CapStore, owner: int, policy: Policy | None = None) -> UserCaps:
    """Read the owner's caps from the database at the store's version, and cache them."""
    version = store.version(owner)
    caps = caps_load(user_id=owner, version=version, policy=policy)
    store.caps_cache[owner] = caps
    return caps


def _policy_checked(store: CapStore) -> Policy | None:
    """The cached policy if its version was checked within RECHECK_SECONDS."""
    entry = store.caps_cache.get(POLICY_OWNER)
    if entry is not None and time.monotonic() - entry[1] < RECHECK_SECONDS:
        return entry[0]
    return None


def _policy_known(store: CapStore, version: str) -> Policy | None:
    """The cached policy if it is at `version` (then checked as of now)."""
    entry = store.caps_cache.get(POLICY_OWNER)
    if entry is None or entry[0].version != version:
        return None
    store.caps_cache[POLICY_OWNER] = (entry[0], time.monotonic())
    return entry[0]


def _policy_at(store: CapStore, version: str) -> Policy:
    policy = _policy_known(store, version)
    if policy is None:
        policy = policy_load(version=version)
        store.caps_cache[POLICY_OWNER] = (policy, time.monotonic())
    return policy


def _policy_unchecked(store: CapStore) -> Policy:
    # The store is down: the last policy seen, else the database's (not cached: unversioned).
    entry = store.caps_cache.get(POLICY_OWNER)
    return entry[0] if entry is not None else policy_load(version="")


def policy_current(store: CapStore) -> Policy:
    """The cap policy, its version checked in the store at most every RECHECK_SECONDS."""
    policy = _policy_checked(store)
    if policy is not None:
        return policy
    try:
        version = store.version(POLICY_OWNER)
    except StoreDown:
        return _policy_unchecked(store)
    return _policy_at(store, version)


async def apolicy_current(store: CapStore) -> Policy:
    """policy_current on the event loop: the database only when the policy moved."""
    policy = _policy_checked(store)
    if policy is not None:
        return policy
    try:
        version = await store.aversion(POLICY_OWNER)
    except StoreDown:
        return await run_in_db_thread(_policy_unchecked, store)
    policy = _policy_known(store, version)
    if policy is not None:
        return policy
    return await run_in_db_thread(_policy_at, store, version)
