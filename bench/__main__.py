"""`make bench`: the gateway against a direct call to the emulator, measured in the same run
(issue #17).

    python -m bench [--quick] [--runs N] [--json PATH]
    BENCH_QUICK=1 make bench          # 1 run, shorter phases (~2.5 min instead of ~10)

Two emulators (one unpaced; one pacing streams at 20 tokens/s, 200 tokens) and three gateways
(`gunicorn config.asgi:application -k uvicorn_worker.UvicornWorker`, -w 1 and -w 2 in front
of the unpaced emulator, -w 2 in front of the paced one: issue #17 allows two workers for
streams, one per core as in the production command), `aws.upstream=bedrock` signing with
SigV4, on PostgreSQL (bench_gateway) + Redis (db 13), every bench user with caps on the three
windows high enough that each check runs and none blocks. Each run measures, direct then
through the gateway: `/anthropic/v1/messages` (not streamed, max_tokens 32) at c=1 for 15 s
(latency, gateway CPU per call: utime+stime of gunicorn's master and workers), at c=32 for
10 s (throughput, CPU), then 200 and 500 paced streams opened over a 10 s ramp (time to the
first content event; failures; the gateway's RSS). The table shows the median of three runs;
"vs direct" is the median of the per-run differences (or ratios). Nothing is asserted.

JSON: var/bench/<UTC time>.json and var/bench/latest.json (`-quick` in both names for quick
runs), and BENCH_JSON / --json if given; the change per row is against the previous
latest.json of the same mode (or BENCH_PREVIOUS).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import load, report, stack  # noqa: E402
from bench.load import Target  # noqa: E402

STREAM_TOKENS_PER_SECOND = 20
STREAM_TOKENS = 200
STREAM_WORKERS = 2


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, keys: list[str], procs: dict[str, stack.Proc]):
        self.args = args
        self.procs = procs
        keys_t = tuple(keys)
        self.direct = Target("direct", procs["emulator"].url)
        self.direct_paced = Target("direct", procs["emulator_paced"].url)
        self.gw1 = Target("gateway", procs["gw1"].url, keys_t)
        self.gw2 = Target("gateway", procs["gw2"].url, keys_t)
        self.gws = Target("gateway", procs["gw_streams"].url, keys_t)
        self.users = len(keys)

    async def warm_up(self) -> None:
        for target in (self.direct, self.gw1, self.gw2):
            result = await load.calls(target, 8, 2, users=self.users)
            if result.errors:
                raise SystemExit(f"warm-up against {target.base} failed: {dict(result.errors)}")
        for target in (self.direct_paced, self.gws):
            result = await load.streams(target, 8, 0.2, 5, users=self.users)
            if result.failed:
                raise SystemExit(f"warm-up streams on {target.base} failed: {result.failures}")

    async def measured_calls(self, target: Target, proc: stack.Proc | None, conc: int, secs: float):
        cpu = proc.cpu_seconds() if proc else 0.0
        result = await load.calls(target, conc, secs, users=self.users)
        await asyncio.sleep(0.5)  # usage records are written after the answer: count them
        cpu_ms = (proc.cpu_seconds() - cpu) / max(1, result.calls) * 1000 if proc else None
        await asyncio.sleep(0.5)
        return result, cpu_ms

    async def run(self) -> report.Run:
        a = self.args
        out: report.Run = {}
        mine = stack.Proc("", os.getpid())  # the client, the emulators and the gateways
        busy, own, wall = stack.machine_busy_seconds(), mine.cpu_seconds(), time.monotonic()
        errors = 0
        # c=1: latency and CPU per call
        d1, _ = await self.measured_calls(self.direct, None, 1, a.c1_seconds)
        g1, cpu1 = await self.measured_calls(self.gw1, self.procs["gw1"], 1, a.c1_seconds)
        errors += sum(g1.errors.values())
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            out[f"latency_c1_{name}"] = {
                "direct": ms(percentile(d1.latencies, q)),
                "gateway": ms(percentile(g1.latencies, q)),
            }
        out["cpu_c1"] = {"gateway": cpu1}
        log(f"  c=1: direct {d1.calls} calls, gateway {g1.calls} calls, {cpu1:.2f} ms CPU/call")
        # c=32: throughput, 1 and 2 workers
        d32, _ = await self.measured_calls(self.direct, None, 32, a.c32_seconds)
        for workers, target in ((1, self.gw1), (2, self.gw2)):
            proc = self.procs[f"gw{workers}"]
            g32, cpu32 = await self.measured_calls(target, proc, 32, a.c32_seconds)
            errors += sum(g32.errors.values())
            if g32.errors:
                log(f"  gateway c=32 -w {workers}: failed or not 200: {dict(g32.errors)}")
            out[f"rps_c32_w{workers}"] = {"direct": d32.rate, "gateway": g32.rate}
            out[f"client_cpu_c32_w{workers}"] = {
                "direct": d32.client_cpu * 100,
                "gateway": g32.client_cpu * 100,
            }
            out[f"cpu_c32_w{workers}"] = {"gateway": cpu32}
            log(f"  c=32 -w {workers}: direct {d32.rate:.0f}/s, gateway {g32.rate:.0f}/s")
        for name, result in (("direct c=1", d1), ("gateway c=1", g1), ("direct c=32", d32)):
            if result.errors:
                log(f"  {name}: failed or not 200: {dict(result.errors)}")
        out["call_errors"] = {"direct": sum(d1.errors.values()) + sum(d32.errors.values())}
        out["call_errors"]["gateway"] = errors
        # paced streams
        gws = self.procs["gw_streams"]
        out["rss_idle"] = {"gateway": gws.rss_mb()}
        peak = [0.0]

        def sample() -> None:
            peak[0] = max(peak[0], gws.rss_mb())

        for count in a.streams:
            ds = await load.streams(self.direct_paced, count, a.ramp, a.stream_tokens)
            await asyncio.sleep(1)
            cpu = gws.cpu_seconds()
            gs = await load.streams(
                self.gws, count, a.ramp, a.stream_tokens, users=self.users, sample=sample
            )
            await asyncio.sleep(0.5)  # the last records are written after the streams end
            out[f"cpu_stream_{count}"] = {"gateway": (gws.cpu_seconds() - cpu) / count * 1000}
            await asyncio.sleep(1)
            for q, name in ((0.5, "p50"), (0.99, "p99")):
                out[f"ttfb_{count}_{name}"] = {
                    "direct": ms(percentile(ds.ttfbs, q)),
                    "gateway": ms(percentile(gs.ttfbs, q)),
                }
            out[f"failed_{count}"] = {"direct": ds.failed, "gateway": gs.failed}
            out[f"client_cpu_{count}"] = {
                "direct": ds.client_cpu * 100,
                "gateway": gs.client_cpu * 100,
            }
            for side, result in (("direct", ds), ("gateway", gs)):
                if result.failed:
                    log(f"  {count} streams, {side}: failures {dict(result.failures)}")
            log(
                f"  {count} streams: TTFB p99 direct {ms(percentile(ds.ttfbs, 0.99)) or 0:.1f} ms,"
                f" gateway {ms(percentile(gs.ttfbs, 0.99)) or 0:.1f} ms;"
                f" completed {ds.completed} / {gs.completed}"
            )
        out["rss_peak"] = {"gateway": peak[0]}
        others = (stack.machine_busy_seconds() - busy) - (mine.cpu_seconds() - own)
        out["others_cpu"] = {"gateway": max(0.0, others) / (time.monotonic() - wall)}
        log(f"  other processes used {out['others_cpu']['gateway']:.2f} cores meanwhile")
        return out


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--json", default=os.environ.get("BENCH_JSON"), help="also write here")
    args = parser.parse_args()
    if os.environ.get("BENCH_QUICK", "").lower() in ("0", "false", "no"):
        args.quick = False
    args.runs = args.runs or (1 if args.quick else 3)
    args.c1_seconds = 5 if args.quick else 15
    args.c32_seconds = 4 if args.quick else 10
    args.streams = (100, 250) if args.quick else (200, 500)
    args.ramp = 5 if args.quick else 10
    args.stream_tokens = 100 if args.quick else STREAM_TOKENS
    return args


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return ""
    return rev + ("+dirty" if dirty else "")


def main() -> None:
    args = arguments()
    started = time.monotonic()
    fds = stack.raise_fd_limit()
    env = stack.gateway_env()
    log(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (quiet: < 0.5)")
    log(f"preparing {env['DATABASE_URL'].rsplit('/', 1)[1]} ({stack.USERS} users with caps)")
    keys = stack.prepare(env)
    runner_kwargs = {}
    try:
        import uvloop

        runner_kwargs["loop_factory"] = uvloop.new_event_loop
    except ImportError:
        pass
    runs: list[report.Run] = []
    with ExitStack() as processes:
        procs = {
            "emulator": processes.enter_context(stack.emulator(env)),
            "emulator_paced": processes.enter_context(
                stack.emulator(
                    env,
                    "--tokens-per-second",
                    str(STREAM_TOKENS_PER_SECOND),
                    "--reply-tokens",
                    str(STREAM_TOKENS),
                )
            ),
        }
        procs["gw1"] = processes.enter_context(stack.gateway(env, procs["emulator"].url, 1))
        procs["gw2"] = processes.enter_context(stack.gateway(env, procs["emulator"].url, 2))
        procs["gw_streams"] = processes.enter_context(
            stack.gateway(env, procs["emulator_paced"].url, STREAM_WORKERS)
        )
        bench = Bench(args, keys, procs)
        with asyncio.Runner(**runner_kwargs) as runner:
            log("warming up")
            runner.run(bench.warm_up())
            for n in range(args.runs):
                log(f"run {n + 1} of {args.runs}")
                runs.append(runner.run(bench.run()))
    spec = report.rows(args.streams)
    summary = report.summarize(spec, runs)
    mode = "quick" if args.quick else "full"
    folder = ROOT / "var" / "bench"
    suffix = "-quick" if args.quick else ""
    latest = folder / f"latest{suffix}.json"
    previous_path = Path(os.environ.get("BENCH_PREVIOUS") or latest)
    previous = report.load(previous_path)
    if previous and previous.get("mode") != mode:
        previous = None
    now = datetime.now(UTC)
    document = {
        "timestamp": now.isoformat(timespec="seconds"),
        "revision": git_revision(),
        "mode": mode,
        "runs": args.runs,
        "config": {
            "c1_seconds": args.c1_seconds,
            "c32_seconds": args.c32_seconds,
            "streams": list(args.streams),
            "ramp_seconds": args.ramp,
            "stream_tokens": args.stream_tokens,
            "tokens_per_second": STREAM_TOKENS_PER_SECOND,
            "users": stack.USERS,
            "fd_limit": fds,
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        },
        "rows": summary,
    }
    paths = [folder / f"{now:%Y%m%dT%H%M%SZ}{suffix}.json", latest]
    if args.json:
        paths.append(Path(args.json))
    report.write(paths, document)
    title = f"gateway vs direct to the emulator, {mode}, median of {args.runs} run(s)"
    if previous:
        title += f"; previous: {previous.get('timestamp')} ({previous.get('revision')})"
    print(f"\n{title}\n")
    print(report.table(summary, previous))
    shown = (str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in paths)
    print(f"\nJSON: {', '.join(shown)}")
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
