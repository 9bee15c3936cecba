"""The production server keeps an idle connection open longer than its clients do.

When the server closes an idle keep-alive connection first (gunicorn's default: after 2 s), a
request the client sends at that moment meets a closed socket and is reset: a call lost to the
SDK, a 502 from a load balancer that pools connections. config/gunicorn.py keeps them 75 s,
above an ALB's or nginx's 60 s and httpx's 5 s; `make bench` once lost 7 calls in ~10,000 this
way.
"""

from __future__ import annotations

import time
from http.client import HTTPConnection
from urllib.parse import urlsplit

from tests.fixtures.nginx import Deployment

# Longer than gunicorn's default keep-alive (2 s), shorter than a client's (httpx: 5 s).
IDLE_SECONDS = 3


def test_an_idle_connection_is_still_open_when_the_client_reuses_it(behind_proxy: Deployment):
    upstream = urlsplit(behind_proxy.upstream_url)  # gunicorn itself, as a balancer sees it
    connection = HTTPConnection(upstream.hostname, upstream.port, timeout=10)
    try:
        connection.request("GET", "/health")
        first = connection.getresponse()
        assert (first.status, first.read()) == (200, b'{"status": "ok"}')
        socket = connection.sock

        time.sleep(IDLE_SECONDS)  # idle, as a pooled connection between two calls
        connection.request("GET", "/health")
        second = connection.getresponse()  # RemoteDisconnected if the server had closed it

        assert second.status == 200
        assert connection.sock is socket  # the same connection, not a new one
    finally:
        connection.close()
