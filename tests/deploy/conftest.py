"""Deployment tests: the gateway behind a real TLS-terminating proxy.

Debian's nginx (`make nginx`) runs as a non-daemon with its own configuration and prefix under
a temp dir, on a free port, terminating TLS with a self-signed pair and proxying to gunicorn
with uvicorn workers, the production server. gunicorn is told to trust forwarded headers from
no one (`--forwarded-allow-ips` a TEST-NET address): uvicorn would otherwise honour
X-Forwarded-Proto from 127.0.0.1 by itself, and a test through a proxy on loopback would pass
for the wrong reason. The gateway learns the client's scheme only from Django's settings
(server.public_url), as behind a load balancer on another machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from accounts.demo_idp import DemoIdP
from emulator.certs import generate_self_signed
from tests.browser.conftest import (  # noqa: F401 - fixtures shared with the browser tests
    browser_context_args,
    browser_type_launch_args,
    reference_data,
)
from tests.fixtures.servers import free_port, run_process, start_gunicorn

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# Nothing sends from here: forwarded headers are trusted by Django's settings alone.
UNTRUSTED_FORWARDER = "192.0.2.1"

NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 32m;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name _;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


@dataclass
class TlsPair:
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@dataclass
class Deployment:
    url: str  # https://127.0.0.1:<nginx port>, what people and clients use
    tls: TlsPair
    upstream_url: str  # gunicorn, plain http on loopback
    nginx_log: Path


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory) -> TlsPair:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = generate_self_signed(folder / "cert.pem", folder / "key.pem")
    return TlsPair(cert=cert, key=key)


@contextlib.contextmanager
def start_nginx(port: int, upstream_url: str, tls: TlsPair) -> Iterator[Path]:
    if not Path(NGINX).exists():
        pytest.fail(
            "nginx is missing: install Debian's nginx (`apt-get install -y nginx`, or "
            "`make nginx`) to run the deployment tests"
        )
    prefix = Path(tempfile.mkdtemp(prefix="nginx-"))
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            prefix=prefix,
            # A root master would hand requests to workers running as nobody, who cannot
            # enter the temp dir.
            user="user root;" if os.geteuid() == 0 else "",
            port=port,
            cert=tls.cert,
            key=tls.key,
            upstream_port=upstream_url.rsplit(":", 1)[1],
        )
    )
    args = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    args += ["-g", "daemon off;"]
    try:
        with run_process(args, f"https://127.0.0.1:{port}/health", verify=tls.context()):
            yield prefix / "error.log"
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


@contextlib.contextmanager
def deploy(env: Mapping[str, str], *, public_url: bool, tls: TlsPair) -> Iterator[Deployment]:
    """gunicorn behind nginx; with GATEWAY_SERVER__PUBLIC_URL set to nginx's URL, or not."""
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    full_env = {**env, "GATEWAY_SERVER__PUBLIC_URL": url} if public_url else dict(env)
    # gunicorn trusts forwarded headers from no one here: uvicorn trusts them from loopback by
    # default, which would let a test pass without the proxy.
    untrusting = ["--forwarded-allow-ips", UNTRUSTED_FORWARDER]
    with (
        start_gunicorn(env=full_env, extra_args=untrusting) as gunicorn,
        start_nginx(port, gunicorn.url, tls) as nginx_log,
    ):
        yield Deployment(url=url, tls=tls, upstream_url=gunicorn.url, nginx_log=nginx_log)


@pytest.fixture(scope="session")
def sso() -> Iterator[DemoIdP]:
    """The local OpenID Connect provider, as the company's SSO."""
    provider = DemoIdP(client_id="gateway-deploy", client_secret="deploy-secret").start()
    yield provider
    provider.stop()


def _gateway_env(emulator, sso: DemoIdP) -> dict[str, str]:
    return {
        "GATEWAY_AWS__ENDPOINT_URL": emulator.url,
        "GATEWAY_AUTH__OIDC__DEMO__CLIENT_ID": sso.client_id,
        "GATEWAY_AUTH__OIDC__DEMO__SECRET": sso.client_secret,
        "GATEWAY_AUTH__OIDC__DEMO__SERVER_URL": sso.url,
        "GATEWAY_AUTH__OIDC__DEMO__NAME": "Demo",
    }


@pytest.fixture(scope="session")
def behind_proxy(django_db_setup, django_db_blocker, emulator, sso, tls_pair):
    """The gateway behind nginx, configured with its public URL."""
    with deploy(_gateway_env(emulator, sso), public_url=True, tls=tls_pair) as deployment:
        yield deployment


@pytest.fixture(scope="session")
def behind_proxy_unconfigured(django_db_setup, django_db_blocker, emulator, sso, tls_pair):
    """The same, as an operator who has not set server.public_url yet would run it."""
    with deploy(_gateway_env(emulator, sso), public_url=False, tls=tls_pair) as deployment:
        yield deployment
