"""`make bench`: the gateway against a direct call to the emulator, measured in the same run.

Runs on PostgreSQL + Redis with caps active (limits high enough that the check runs but never
blocks): BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/gateway_bench) and
BENCH_REDIS_URL (default redis://127.0.0.1:6379/15). Prints one table; nothing is asserted.

  python -m bench [--quick] [--streams N] [--stream-seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.servers import free_port, run_process  # noqa: E402

MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
BODY = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Benchmark me, briefly."}],
}
INVOKE = f"/model/{MODEL.replace(':', '%3A')}/invoke"
STREAM = f"/model/{MODEL.replace(':', '%3A')}/invoke-with-response-stream"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def prepare(env: dict[str, str]) -> str:
    """Create the database if needed, migrate, and return a fresh API key with high caps."""
    url = env["DATABASE_URL"]
    if url.startswith("postgres"):
        import psycopg

        name = url.rsplit("/", 1)[1]
        server = url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(server, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    # Caps active on every window, high enough that the check runs but never blocks.
    script = (
        "from accounts.services import api_key_create, user_get_or_create\n"
        "from caps.models import UserCapConfig\n"
        "from caps.services import cap_config_changed\n"
        "user = user_get_or_create(email='bench@example.com')\n"
        "for cap_type in ('hourly', 'daily', 'monthly'):\n"
        "    UserCapConfig.objects.update_or_create(user=user, cap_type=cap_type,\n"
        "        set_by='admin', defaults=dict(max_requests=10**9, max_tokens=10**12,\n"
        "        max_cost_cents=10**9, is_active=True, enforce_from=None))\n"
        "cap_config_changed(user_id=user.pk)\n"
        "print(api_key_create(user=user, name='bench').raw)\n"
    )
    out = subprocess.run(
        [*manage, "shell", "--no-imports", "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


async def timed_calls(client: httpx.AsyncClient, url: str, headers: dict, n: int, conc: int):
    latencies: list[float] = []
    errors = 0
    queue = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        for _ in queue:
            started = time.perf_counter()
            response = await client.post(url, content=json.dumps(BODY), headers=headers)
            latencies.append(time.perf_counter() - started)
            errors += response.status_code != 200

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return latencies, time.perf_counter() - started, errors


async def streams(base: str, headers: dict, count: int, seconds: float, ramp: float):
    """`count` streams at 10 tokens/s, started evenly over `ramp` seconds (all open at once
    when `ramp` < `seconds`); time to first byte and completion."""
    tokens = max(1, int(seconds * 10))
    knobs = {
        **headers,
        "x-emulator-tokens-per-second": "10",
        "x-emulator-reply-tokens": str(tokens),
    }
    body = json.dumps({**BODY, "max_tokens": tokens + 10})
    ttfbs: list[float] = []
    completed = 0
    statuses: Counter = Counter()
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(timeout=seconds * 3 + 30, limits=limits) as client:

        async def one(delay: float) -> None:
            nonlocal completed
            await asyncio.sleep(delay)
            started = time.perf_counter()
            async with client.stream("POST", base + STREAM, content=body, headers=knobs) as resp:
                first = True
                async for _ in resp.aiter_raw():
                    if first:
                        ttfbs.append(time.perf_counter() - started)
                        first = False
                completed += resp.status_code == 200
                statuses[resp.status_code] += 1

        starts = (ramp * i / count for i in range(count))
        results = await asyncio.gather(*(one(delay) for delay in starts), return_exceptions=True)
    failures = Counter(type(r).__name__ for r in results if isinstance(r, BaseException))
    if failures or set(statuses) - {200}:
        print(f"streams against {base}: {dict(statuses)} {dict(failures)}", file=sys.stderr)
    return ttfbs, completed


def row(name: str, direct: str, gateway: str, ratio: str) -> str:
    return f"| {name:<44} | {direct:>12} | {gateway:>12} | {ratio:>10} |"


async def run(args: argparse.Namespace, emulator_url: str, gateway_url: str, key: str, pid: int):
    direct_headers = {"content-type": "application/json", "authorization": "Bearer bench"}
    gateway_headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    lines = [
        row("measure", "direct", "gateway", "ratio"),
        row("-" * 44, "-" * 12, "-" * 12, "-" * 10),
    ]
    n1 = 200 if args.quick else 1000
    n32 = 1000 if args.quick else 5000
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
        for target in (emulator_url, gateway_url + "/bedrock"):  # warm up
            headers = direct_headers if target == emulator_url else gateway_headers
            await timed_calls(client, target + INVOKE, headers, 50, 4)
        d1, _, _ = await timed_calls(client, emulator_url + INVOKE, direct_headers, n1, 1)
        cpu0 = cpu_seconds(pid)
        g1, _, e1 = await timed_calls(
            client, gateway_url + "/bedrock" + INVOKE, gateway_headers, n1, 1
        )
        cpu_per_call = (cpu_seconds(pid) - cpu0) / n1 * 1000
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            d, g = percentile(d1, q) * 1000, percentile(g1, q) * 1000
            lines.append(
                row(f"invoke latency c=1 {label} (ms)", f"{d:.2f}", f"{g:.2f}", f"+{g - d:.2f} ms")
            )
        lines.append(row("gateway CPU per call c=1 (ms)", "", f"{cpu_per_call:.2f}", ""))
        _, dt, _ = await timed_calls(client, emulator_url + INVOKE, direct_headers, n32, 32)
        _, gt, e32 = await timed_calls(
            client, gateway_url + "/bedrock" + INVOKE, gateway_headers, n32, 32
        )
        d_rps, g_rps = n32 / dt, n32 / gt
        lines.append(
            row(
                "invoke throughput c=32 (req/s)",
                f"{d_rps:.0f}",
                f"{g_rps:.0f}",
                f"{g_rps / d_rps:.0%}",
            )
        )
        lines.append(row("errors (c=1 / c=32)", "", f"{e1} / {e32}", ""))
    rss_before = rss_mb(pid)
    ramp = args.stream_seconds / 3
    dttfb, dok = await streams(
        emulator_url, direct_headers, args.streams, args.stream_seconds, ramp
    )
    gttfb, gok = await streams(
        gateway_url + "/bedrock", gateway_headers, args.streams, args.stream_seconds, ramp
    )
    if dttfb and gttfb:
        d, g = percentile(dttfb, 0.99) * 1000, percentile(gttfb, 0.99) * 1000
        lines.append(
            row(
                f"{args.streams} streams ({ramp:.0f} s ramp) TTFB p99 (ms)",
                f"{d:.1f}",
                f"{g:.1f}",
                f"+{g - d:.1f} ms",
            )
        )
    lines.append(row(f"{args.streams} streams completed", str(dok), str(gok), ""))
    lines.append(
        row(
            "gateway RSS before / after streams (MB)",
            "",
            f"{rss_before:.0f} / {rss_mb(pid):.0f}",
            "",
        )
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, 100 short streams")
    parser.add_argument("--streams", type=int, default=None)
    parser.add_argument("--stream-seconds", type=float, default=None)
    args = parser.parse_args()
    args.streams = args.streams or (100 if args.quick else 500)
    args.stream_seconds = args.stream_seconds or (5 if args.quick else 30)
    env = {
        **os.environ,
        "DATABASE_URL": os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gateway_bench"
        ),
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
        "GATEWAY_SERVER__SECRET_KEY": "bench-secret-key-0123456789-0123456789-0123456789",
    }
    key = prepare(env)
    emulator_port, gateway_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    env["GATEWAY_AWS__ENDPOINT_URL"] = emulator_url
    with ExitStack() as stack:
        stack.enter_context(
            run_process(
                [sys.executable, "-m", "emulator", "--port", str(emulator_port)],
                f"{emulator_url}/ping",
                env,
            )
        )
        gateway = stack.enter_context(
            run_process(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "config.asgi:application",
                    "-k",
                    "uvicorn_worker.UvicornWorker",
                    "--no-control-socket",
                    "-w",
                    "1",
                    "-b",
                    f"127.0.0.1:{gateway_port}",
                    "--log-level",
                    "warning",
                ],
                f"{gateway_url}/health",
                env,
            )
        )
        worker_pid = int(
            subprocess.run(
                ["pgrep", "-P", str(gateway.pid)], capture_output=True, text=True, check=True
            ).stdout.split()[0]
        )
        lines = asyncio.run(run(args, emulator_url, gateway_url, key, worker_pid))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
