"""gunicorn settings for the production command (`gunicorn -c config/gunicorn.py …`).

Metrics across workers: each worker keeps its own Prometheus counters, so a scrape answered
by one worker would see only its share. prometheus_client's multiprocess mode has every worker
write its values to files in PROMETHEUS_MULTIPROC_DIR, and /metrics adds them up. The folder
is set here, in the master, before any worker starts (so before any worker imports
prometheus_client), emptied at start-up, and a dead worker's live gauges are dropped.
"""

import os
import shutil
import tempfile
from pathlib import Path


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn's hook signature
    default = Path(tempfile.gettempdir()) / f"gateway-metrics-{os.getpid()}"
    folder = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(default)))
    shutil.rmtree(folder, ignore_errors=True)  # counters start from zero with the server
    folder.mkdir(mode=0o700, parents=True)


def child_exit(server, worker) -> None:  # noqa: ANN001
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
