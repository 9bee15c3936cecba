"""`make run`: the web server (HTTP and HTTPS), the job runner and, by default, the emulator."""

import asyncio
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand


def _die_with_parent() -> None:
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so this process can end
    # before its `finally` runs: have the kernel stop the children when it goes (Linux).
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Command(BaseCommand):
    help = "Run the gateway with its job runner (and the Bedrock emulator when it is the upstream)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-jobs", action="store_true", help="do not start the job runner")

    def handle(self, *args, no_jobs: bool, **options) -> None:
        cfg = settings.GATEWAY
        children: list[subprocess.Popen] = []
        try:
            if cfg.aws.upstream == "emulator" and not cfg.aws.endpoint_url:
                emulator = self._start_emulator(cfg.aws.emulator_port)
                if emulator:
                    children.append(emulator)
            if not no_jobs:
                children.append(self._start_jobs())
            if settings.GATEWAY.auth.demo_provider:
                self._start_demo_provider()
            certfile, keyfile = self._tls_pair()
            self._banner(certfile)
            asyncio.run(self._serve(certfile, keyfile))
        finally:
            for child in children:
                child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()

    def _start_emulator(self, port: int) -> subprocess.Popen | None:
        if _listening(port):
            self.stdout.write(f"emulator: already listening on 127.0.0.1:{port}")
            return None
        process = subprocess.Popen(
            [sys.executable, "-m", "emulator", "--port", str(port)], preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + 15
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the Bedrock emulator did not start; see its output above")
            time.sleep(0.1)
        return process

    def _start_demo_provider(self) -> None:
        # Loopback only: it lets anyone sign in as any e-mail.
        from accounts.demo_idp import DemoIdP

        port = settings.GATEWAY.auth.demo_provider_port
        DemoIdP(client_id="demo", client_secret="demo", port=port).start()  # noqa: S106

    def _start_jobs(self) -> subprocess.Popen:
        # One worker with an embedded beat: enough for one machine; production runs them apart.
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--beat",
            "--pool=solo",
            "--loglevel=warning",
            "--scheduler",
            "django_celery_beat.schedulers:DatabaseScheduler",
            "--schedule",
            str(settings.VAR_DIR / "celerybeat-schedule"),
        ]
        return subprocess.Popen(args, env={**os.environ}, preexec_fn=_die_with_parent)

    def _tls_pair(self) -> tuple[str | None, str | None]:
        server = settings.GATEWAY.server
        if server.tls_certfile:
            return server.tls_certfile, server.tls_keyfile
        if not server.tls_autogenerate:
            return None, None
        from emulator.certs import generate_self_signed

        folder = Path(settings.VAR_DIR) / "tls"
        folder.mkdir(exist_ok=True)
        cert, key = folder / "localhost.pem", folder / "localhost-key.pem"
        if not cert.exists():
            generate_self_signed(str(cert), str(key))
        return str(cert), str(key)

    def _banner(self, certfile: str | None) -> None:
        server = settings.GATEWAY.server
        base = f"http://{server.host}:{server.port}"
        lines = [
            "",
            f"  The gateway is up: {base}",
            f"  Dashboard and sign-in: {base}/   Admin: {base}/admin/   API docs: {base}/api/docs",
        ]
        if certfile:
            lines.append(
                f"  HTTPS (for boto3 bearer tokens): https://{server.host}:{server.tls_port}"
            )
            lines.append(f"  Trust its certificate: export AWS_CA_BUNDLE={certfile}")
        if settings.GATEWAY.auth.demo_provider:
            lines.append(
                "  Sign in with 'Demo sign-in' (any e-mail; no identity provider needed). "
                "Administrators: GATEWAY_AUTH__ADMIN_EMAILS=you@example.com make run"
            )
        lines += [
            "  A first API key:   .venv/bin/python manage.py createapikey you@example.com --admin",
            f"  Try it:  curl -s {base}/anthropic/v1/messages -H 'x-api-key: <key>' "
            "-H 'content-type: application/json' "
            '-d \'{"model":"claude-haiku-4-5","max_tokens":64,'
            '"messages":[{"role":"user","content":"Hello"}]}\'',
            "",
        ]
        self.stdout.write("\n".join(lines))

    async def _serve(self, certfile: str | None, keyfile: str | None) -> None:
        server = settings.GATEWAY.server
        common = {
            "app": "config.asgi:application",
            "host": server.host,
            "lifespan": "on",
            "timeout_graceful_shutdown": server.shutdown_grace_seconds,
            "access_log": False,
        }
        configs = [uvicorn.Config(port=server.port, **common)]
        if certfile:
            configs.append(
                uvicorn.Config(
                    port=server.tls_port, ssl_certfile=certfile, ssl_keyfile=keyfile, **common
                )
            )
        servers = [uvicorn.Server(config) for config in configs]
        await asyncio.gather(*(s.serve() for s in servers))
