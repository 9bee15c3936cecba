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
from pydantic import BaseModel


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


def _free(host: str, port: int) -> bool:
    """Whether a server could bind `host:port` now (as servers do, with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _any_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _default(section: BaseModel, name: str) -> object:
    return type(section).model_fields[name].default


class Command(BaseCommand):
    help = "Run the gateway with its job runner (and the Bedrock emulator when it is the upstream)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-jobs", action="store_true", help="do not start the job runner")

    def handle(self, *args, no_jobs: bool, **options) -> None:
        cfg = settings.GATEWAY
        self._claim_ports()
        children: list[subprocess.Popen] = []
        try:
            if self._uses_emulator():
                children.append(self._start_emulator(cfg.aws.emulator_port))
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

    @staticmethod
    def _uses_emulator() -> bool:
        aws = settings.GATEWAY.aws
        return aws.upstream == "emulator" and not aws.endpoint_url

    def _claim_ports(self) -> None:
        """Check every port this command will listen on before anything starts. A default port
        of the emulator or the demo sign-in that is taken (say, by another `make run`) is
        replaced by a free one, printed, and the command starts again with it (the settings
        derive URLs from these ports); a taken port that was chosen explicitly, or the web
        server's own, stops here with one line naming the variable to set."""
        cfg = settings.GATEWAY
        wanted: list[tuple[str, str, int, object]] = [
            ("PORT", cfg.server.host, cfg.server.port, None)
        ]
        if cfg.server.tls_certfile or cfg.server.tls_autogenerate:
            wanted.append(("TLS_PORT", cfg.server.host, cfg.server.tls_port, None))
        if self._uses_emulator():
            default = _default(cfg.aws, "emulator_port")
            wanted.append(
                ("GATEWAY_AWS__EMULATOR_PORT", "127.0.0.1", cfg.aws.emulator_port, default)
            )
        if cfg.auth.demo_provider:
            default = _default(cfg.auth, "demo_provider_port")
            port = cfg.auth.demo_provider_port
            wanted.append(("GATEWAY_AUTH__DEMO_PROVIDER_PORT", "127.0.0.1", port, default))
        moved: dict[str, str] = {}
        for variable, host, port, default in wanted:
            if _free(host, port):
                continue
            if port != default or variable in os.environ:
                raise SystemExit(f"error: port {port} is in use; set {variable} to a free port")
            moved[variable] = str(_any_free_port())
            self.stdout.write(f"port {port} is in use: {variable}={moved[variable]} instead")
        if moved:
            self.stdout.flush()
            os.environ.update(moved)
            os.execv(sys.executable, [sys.executable, *sys.argv])  # noqa: S606 (ourselves, again)

    def _start_emulator(self, port: int) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "emulator", "--port", str(port)], preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + 15
        # Ours only once our process answers on the port: another one may have taken it since.
        while not _listening(port) or process.poll() is not None:
            if process.poll() is not None:
                raise SystemExit(
                    f"error: the Bedrock emulator could not listen on {port}; "
                    "set GATEWAY_AWS__EMULATOR_PORT to a free port"
                )
            if time.monotonic() > deadline:
                process.kill()
                raise SystemExit("error: the Bedrock emulator did not start; see its output above")
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
