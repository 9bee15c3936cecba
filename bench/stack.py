"""The processes `make bench` measures: two emulators, the gateways in front of them, and the
database, users and keys they serve.

The gateway runs as in production: `gunicorn config.asgi:application -k
uvicorn_worker.UvicornWorker -w N` with the production keep-alive (config/gunicorn.py),
`aws.upstream=bedrock` with SigV4 keys and
`aws.endpoint_url` pointing at a local emulator (so the emulator's knob headers are not
forwarded: the paced emulator for streams is configured by its flags).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from config.gunicorn import keepalive  # noqa: E402
from emulator.config import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY  # noqa: E402
from tests.fixtures.servers import free_port, run_process  # noqa: E402

DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_gateway"
REDIS_URL = "redis://127.0.0.1:6379/13"
BROKER_URL = "redis://127.0.0.1:6379/14"
SECRET_KEY = "bench-only-secret-key-0123456789-0123456789-abcdef"  # noqa: S105

# One user may have `usage_caps.max_in_flight_per_user` (32) calls in flight: 500 streams come
# from many users, 20 each, every one with caps on the three windows.
USERS = 25
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def gateway_env() -> dict[str, str]:
    """The gateway's environment: PostgreSQL + Redis, Bedrock upstream signed with SigV4."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "AWS_"))}
    env.update(
        DATABASE_URL=os.environ.get("BENCH_DATABASE_URL", DATABASE_URL),
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", REDIS_URL),
        CELERY_BROKER_URL=os.environ.get("BENCH_BROKER_URL", BROKER_URL),
        GATEWAY_SERVER__SECRET_KEY=SECRET_KEY,
        GATEWAY_AWS__UPSTREAM="bedrock",
        AWS_REGION="us-east-1",
        GATEWAY_AWS__ACCESS_KEY_ID=DEFAULT_ACCESS_KEY,
        GATEWAY_AWS__SECRET_ACCESS_KEY=DEFAULT_SECRET_KEY,
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    return env


def raise_fd_limit() -> int:
    """Soft fd limit up to the hard one (children inherit it): 500 streams hold ~1,000 fds in
    the gateway (client + upstream) and 500 in the client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_SETUP = """
import json
from accounts.services import api_key_create, user_get_or_create
from caps.cache import cap_config_changed
from caps.models import UserCapConfig

keys = []
for i in range({users}):
    user = user_get_or_create(email=f"bench{{i}}@example.invalid")
    # An administrator's cap on each window replaces the cap policy there; high enough that
    # every check runs and none blocks; enforce_from=None: in force at once, no grace period.
    for cap_type in ("hourly", "daily", "monthly"):
        UserCapConfig.objects.update_or_create(
            user=user, cap_type=cap_type, set_by="admin",
            defaults=dict(max_requests=10**9, max_tokens=10**12, max_cost_cents=10**9,
                          is_active=True, enforce_from=None, prior_limits=None))
    cap_config_changed(user_id=user.pk)
    keys.append(api_key_create(user=user, name="bench").raw)
print(json.dumps(keys))
"""


def prepare(env: dict[str, str]) -> list[str]:
    """Create the database if absent, migrate, and return one fresh API key per bench user."""
    url = env["DATABASE_URL"]
    if url.startswith("postgres"):
        import psycopg

        name = url.rsplit("/", 1)[1].split("?")[0]
        server = url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(server, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run(
        [*manage, "shell", "--no-imports", "-c", _SETUP.format(users=USERS)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@dataclass
class Proc:
    url: str
    pid: int

    def tree(self) -> list[int]:
        """This process and all its descendants (gunicorn's master and its workers)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(children.get(pid, ()))
        return pids

    def cpu_seconds(self) -> float:
        """utime + stime of every process of the tree (/proc/<pid>/stat)."""
        total = 0
        for pid in self.tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / CLOCK_TICK

    def rss_mb(self) -> float:
        """Resident memory of every process of the tree."""
        total = 0
        for pid in self.tree():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total / 1024


@contextmanager
def emulator(env: dict[str, str], *flags: str) -> Iterator[Proc]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "emulator", "--port", str(port), *flags]
    with run_process(args, f"{url}/ping", env) as process:
        yield Proc(url, process.pid)


@contextmanager
def gateway(env: dict[str, str], upstream: str, workers: int) -> Iterator[Proc]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.asgi:application",
        "-k",
        "uvicorn_worker.UvicornWorker",
        "--no-control-socket",
        "-w",
        str(workers),
        # The load client keeps idle connections 5 s: with gunicorn's default 2 s, a call sent
        # as the gateway closes its connection is reset (config/gunicorn.py, keep-alive).
        "--keep-alive",
        str(keepalive),
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    with run_process(args, f"{url}/health", {**env, "GATEWAY_AWS__ENDPOINT_URL": upstream}) as p:
        yield Proc(url, p.pid)


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy (/proc/stat), steal included."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICK
