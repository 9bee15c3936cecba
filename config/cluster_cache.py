"""Django's cache on a Redis Cluster (``redis.cluster: true``).

django-redis speaks to one Redis (or a sentinel set), not to a cluster. Django's own
``RedisCache`` takes its client from a small client class: this one hands it the process's
``RedisCluster`` (config/redis_clients.py: same timeouts and retries as the counters) and
replaces the two operations that are multi-key in Django's version — ``get_many`` (MGET) and
``set_many`` (MSET) — with per-slot ones, since a cluster refuses a multi-key command whose
keys span slots (the prompt-prefix hints of caps/estimates.py are such keys). ``delete_many``
already splits (RedisCluster.delete sends one DEL per slot); ``clear`` flushes every master.

Values are pickled by Django's serializer (integers stay plain, so ``incr`` is atomic), as
with django-redis; the two backends' entries are not interchangeable, which only matters for
a cache shared across a switch (the cache holds nothing that is not rebuilt on a miss).
"""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.cluster import RedisCluster

from config import redis_clients


class RedisClusterCacheClient(RedisCacheClient):
    def get_client(self, key=None, *, write=False) -> RedisCluster:
        return redis_clients.sync_client(self._servers[0], cluster=True)  # type: ignore[return-value]

    def get_many(self, keys):
        keys = list(keys)
        values = self.get_client().mget_nonatomic(keys)
        return {
            k: self._serializer.loads(v) for k, v in zip(keys, values, strict=True) if v is not None
        }

    def set_many(self, data, timeout):
        # A non-transactional cluster pipeline sends each node its own commands.
        pipe = self.get_client(write=True).pipeline(transaction=False)
        for key, value in data.items():
            if timeout == 0:
                pipe.delete(key)
            else:
                pipe.set(key, self._serializer.dumps(value), ex=timeout)
        pipe.execute()

    def clear(self):
        client = self.get_client(write=True)
        return bool(client.flushdb(target_nodes=RedisCluster.PRIMARIES))


class RedisClusterCache(RedisCache):
    """``CACHES["default"]["BACKEND"]`` when ``redis.cluster`` is on; LOCATION is one node."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = RedisClusterCacheClient
