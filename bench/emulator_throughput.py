"""How fast the Bedrock emulator answers, so it is known never to be a benchmark's bottleneck.

    python bench/emulator_throughput.py                 # starts an emulator, 5000 invokes
    python bench/emulator_throughput.py --stream -n 2000
    python bench/emulator_throughput.py --url http://127.0.0.1:8900

Prints requests per second at the given concurrency and, for an emulator it started, the
emulator's own CPU time per request (the client shares the machine, so requests/s is a floor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODEL = "us.anthropic.claude-sonnet-4-6"
BODY = json.dumps(
    {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 256,
        "system": "You are a benchmark.",
        "messages": [{"role": "user", "content": "Say something short."}],
    }
).encode()


def start_emulator(log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "emulator", "--port", "0"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        match = re.search(r"listening on (\S+)", log_path.read_text())
        if match:
            url = match[1]
            try:
                if httpx.get(f"{url}/ping").status_code == 200:
                    return process, url
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"emulator did not start:\n{log_path.read_text()}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def hammer(url: str, total: int, concurrency: int, stream: bool) -> float:
    verb = "invoke-with-response-stream" if stream else "invoke"
    target = f"{url}/model/{MODEL}/{verb}"
    headers = {"authorization": "Bearer bench", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    remaining = total

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                response = await client.post(target, content=BODY, headers=headers)
                response.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(min(concurrency, 8))))  # warm-up
        remaining = total
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an emulator already running (default: start one)")
    parser.add_argument("-n", "--requests", type=int, default=5000)
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--stream", action="store_true", help="invoke-with-response-stream")
    args = parser.parse_args()

    process = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url
        if url is None:
            process, url = start_emulator(Path(tmp) / "emulator.log")
        try:
            cpu_before = cpu_seconds(process.pid) if process else 0.0
            elapsed = asyncio.run(hammer(url, args.requests, args.concurrency, args.stream))
            cpu_after = cpu_seconds(process.pid) if process else 0.0
        finally:
            if process:
                process.terminate()
                process.wait(timeout=10)
    kind = "streams" if args.stream else "invokes"
    print(
        f"{args.requests} {kind}, concurrency {args.concurrency}: {elapsed:.2f} s, "
        f"{args.requests / elapsed:,.0f} requests/s"
    )
    if process:
        per_request = (cpu_after - cpu_before) / args.requests * 1e6
        print(f"emulator CPU per request: {per_request:.0f} µs")


if __name__ == "__main__":
    main()
