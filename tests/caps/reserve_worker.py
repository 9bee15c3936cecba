"""Run by the two-process tests: reserve (and settle) from a separate process.

    python tests/caps/reserve_worker.py <redis-url|embedded> <user_id> <calls> <start_epoch>
        [<team_id>]

`user_id` may be a comma-separated list: the calls go round the users (members of `team_id`).

Prints how many reservations succeeded. The environment names the test database.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from caps.errors import CapExceeded  # noqa: E402
from caps.reservations import cap_reserve, cap_settle  # noqa: E402
from caps.store import cap_store  # noqa: E402
from costs.money import Usage  # noqa: E402


def main() -> None:
    where, calls, start = sys.argv[1], int(sys.argv[3]), sys.argv[4]
    users = [int(user) for user in sys.argv[2].split(",")]
    team_id = int(sys.argv[5]) if len(sys.argv) > 5 else None
    store = cap_store(embedded=True) if where == "embedded" else cap_store(url=where)
    time.sleep(max(0.0, float(start) - time.time()))  # start together with the other process
    ok = 0
    usage = Usage(input_tokens=10, output_tokens=10)
    for call in range(calls):
        try:
            reservation = cap_reserve(
                user_id=users[call % len(users)],
                team_id=team_id,
                model_id="us.anthropic.claude-sonnet-4-6",
                estimate=usage,
                store=store,
            )
        except CapExceeded:
            continue
        ok += 1
        cap_settle(reservation=reservation, actual=usage)
    print(ok)


if __name__ == "__main__":
    main()
