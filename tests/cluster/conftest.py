"""A real three-master Redis Cluster (redis-server processes on free ports under a temp dir),
the gateway's settings pointed at it, and gateway processes running on it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import redis.cluster

from tests.fixtures.gateways import GATEWAY_ENV
from tests.fixtures.servers import Server, free_port, start_gateway
from tests.fixtures.waiting import wait_for


@dataclass
class Cluster:
    ports: list[int]
    dir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        """One node's URL: the clients discover the others."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def client(self) -> redis.cluster.RedisCluster:
        return redis.cluster.RedisCluster(host="127.0.0.1", port=self.ports[0])

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port)

    def flush(self) -> None:
        for port in self.ports:
            self.node(port).flushall()

    def node_of(self, key: str) -> int:
        """The port of the master that holds `key`'s slot."""
        return self.client().get_node_from_key(key).port


def _start_cluster() -> Cluster:
    cluster = Cluster(ports=[], dir=Path(tempfile.mkdtemp(prefix="redis-cluster-")))
    try:
        while len(cluster.ports) < 3:
            port = free_port()
            if port in cluster.ports or port + 10000 > 65535:  # the cluster bus is port + 10000
                continue
            cluster.ports.append(port)
            log = (cluster.dir / f"redis-{port}.log").open("wb")
            cluster.processes.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(cluster.dir),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for port in cluster.ports:
            _wait(lambda p=port: cluster.node(p).ping(), f"redis-server on {port}")
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in cluster.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

        def ok() -> bool:
            return all(
                cluster.node(port).cluster("info")["cluster_state"] == "ok"
                for port in cluster.ports
            )

        _wait(ok, "cluster_state:ok")
        return cluster
    except BaseException:
        _stop_cluster(cluster)
        raise


def _stop_cluster(cluster: Cluster) -> None:
    for process in cluster.processes:
        process.terminate()
    for process in cluster.processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(cluster.dir, ignore_errors=True)


def _wait(predicate, what: str, timeout: float = 20.0) -> None:
    """Until `predicate` holds (a node refusing connections while it starts is not yet)."""

    def holds() -> bool:
        try:
            return bool(predicate())
        except redis.RedisError:
            return False

    if not wait_for(holds, timeout=timeout):
        raise RuntimeError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    cluster = _start_cluster()
    try:
        yield cluster
    finally:
        _stop_cluster(cluster)


@pytest.fixture
def on_cluster(settings, redis_cluster) -> Cluster:
    """This process's gateway settings on the cluster (REDIS_URL = one node, cluster on)."""
    gateway = settings.GATEWAY
    settings.GATEWAY = gateway.model_copy(
        update={
            "redis": gateway.redis.model_copy(update={"url": redis_cluster.url, "cluster": True})
        }
    )
    return redis_cluster


def cluster_gateway_env(cluster: Cluster) -> dict[str, str]:
    return {
        **GATEWAY_ENV,
        "REDIS_URL": cluster.url,
        "GATEWAY_REDIS__CLUSTER": "true",
        # Small, so that a test reaches it (tests/cluster/test_cluster_gateways.py).
        "GATEWAY_USAGE_CAPS__COUNT_TOKENS_PER_MINUTE": "4",
    }


@dataclass
class TwoGateways:
    first: Server
    second: Server
    emulator_url: str

    @property
    def urls(self) -> list[str]:
        return [self.first.url, self.second.url]


@pytest.fixture(scope="session")
def cluster_gateways(
    django_db_setup, django_db_blocker, emulator, redis_cluster
) -> Iterator[TwoGateways]:
    """Two gateway processes on the cluster and the test database (as two replicas behind a
    load balancer would be)."""
    env = cluster_gateway_env(redis_cluster)
    with (
        start_gateway(upstream_url=emulator.url, env=env) as first,
        start_gateway(upstream_url=emulator.url, env=env) as second,
    ):
        yield TwoGateways(first=first, second=second, emulator_url=emulator.url)
