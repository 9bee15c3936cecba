"""gunicorn settings for the production command (`gunicorn -c config/gunicorn.py …`).

Metrics across workers: each worker keeps its own Prometheus counters, so a scrape answered
by one worker would see only its share. prometheus_client's multiprocess mode has every worker
write its values to files in PROMETHEUS_MULTIPROC_DIR, and /metrics adds them up. The folder
is set here, in the master, before any worker starts (so before any worker imports
prometheus_client), emptied at start-up, and a dead worker's live gauges are dropped.

Workers: one per core (the proxy is CPU-bound in Python: more workers than cores only queue),
or WEB_CONCURRENCY; a `-w` on the command line wins.

Keep-alive: an idle connection is kept open longer than whatever holds connections to the
gateway keeps it idle (a load balancer: AWS ALB 60 s, nginx's upstream keepalive 60 s; clients:
httpx 5 s, Node 4-5 s). The side that closes an idle connection first must be the client: when
the server closes it (gunicorn's default is 2 s), a request the client sends at that moment
meets a closed socket and gets a reset instead of an answer (a 502 behind a load balancer).
"""

import os
import shutil
import tempfile
from pathlib import Path

workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)
keepalive = 75  # seconds


def on_starting(server) -> None:  # gunicorn's hook signature
    default = Path(tempfile.gettempdir()) / f"gateway-metrics-{os.getpid()}"
    folder = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(default)))
    shutil.rmtree(folder, ignore_errors=True)  # counters start from zero with the server
    folder.mkdir(mode=0o700, parents=True)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
