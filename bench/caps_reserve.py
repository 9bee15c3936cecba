"""The cap reservation round trip: acap_reserve and acap_settle, one call at a time.

    python bench/caps_reserve.py                       # Redis at redis://127.0.0.1:6379/5
    python bench/caps_reserve.py --store embedded -n 2000
    python bench/caps_reserve.py --redis-url redis://127.0.0.1:6379/15 --database-url postgres://…

Target (the issue): reserve p50 < 1 ms, p99 < 3 ms against local Redis. The user has an
hourly, a daily and a monthly cap with limits high enough that every check runs and none
blocks; the caps cache is warm (the hot path's state). Sets up its own database: SQLite under
var/ by default (migrated on start), or --database-url. Prints one table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--calls", type=int, default=5000)
    parser.add_argument("--store", choices=["redis", "embedded"], default="redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument(
        "--database-url", default=f"sqlite:///{ROOT / 'var' / 'bench-caps.sqlite3'}"
    )
    return parser.parse_args()


def _percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _measure(store, user_id: int, calls: int) -> dict[str, list[float]]:
    from caps.reservations import acap_reserve, acap_settle
    from costs.money import Usage

    model = "us.anthropic.claude-sonnet-4-6"
    estimate = Usage(input_tokens=2000, output_tokens=1000)
    actual = Usage(input_tokens=1900, output_tokens=700)
    timings: dict[str, list[float]] = {"cap_reserve": [], "cap_settle": [], "both": []}
    for i in range(calls + 200):
        started = time.perf_counter()
        reservation = await acap_reserve(
            user_id=user_id, model_id=model, estimate=estimate, store=store
        )
        reserved = time.perf_counter()
        await acap_settle(reservation=reservation, actual=actual)
        settled = time.perf_counter()
        if i >= 200:  # the first calls warm the caches, the script cache and the connection
            timings["cap_reserve"].append((reserved - started) * 1000)
            timings["cap_settle"].append((settled - reserved) * 1000)
            timings["both"].append((settled - started) * 1000)
    return timings


def main() -> None:
    args = _args()
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("GATEWAY_SERVER__SECRET_KEY", "bench-only-secret-key-0123456789abcdef")
    if args.store == "redis":
        os.environ["REDIS_URL"] = args.redis_url
    else:
        os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from accounts.models import User
    from caps.models import UserCapConfig
    from caps.services import cap_create
    from caps.store import cap_store

    user, _ = User.objects.get_or_create(
        email="caps-bench@example.invalid", defaults={"username": "caps-bench@example.invalid"}
    )
    UserCapConfig.objects.filter(user=user).delete()
    for cap_type in ("hourly", "daily", "monthly"):
        cap_create(
            user_id=user.pk,
            cap_type=cap_type,
            set_by="user",
            max_requests=10**9,
            max_tokens=10**15,
            max_cost_cents=10**12,
        )
    store = cap_store(url=args.redis_url) if args.store == "redis" else cap_store(embedded=True)
    timings = asyncio.run(_measure(store, user.pk, args.calls))

    where = args.redis_url if args.store == "redis" else args.database_url.split("?")[0]
    print(f"cap reservation round trip, {args.calls} sequential calls, store: {where}")
    print(f"{'operation':<12} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'max ms':>8}")
    for name, samples in timings.items():
        print(
            f"{name:<12} {_percentile(samples, 0.5):>8.3f} {_percentile(samples, 0.99):>8.3f}"
            f" {statistics.fmean(samples):>8.3f} {max(samples):>8.3f}"
        )


if __name__ == "__main__":
    main()
