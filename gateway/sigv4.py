"""AWS Signature Version 4 for the upstream's requests, as botocore's `SigV4Auth` signs them.

botocore builds an `AWSRequest`, an `HTTPHeaders` map and the signing key anew for every call:
about a twentieth of the gateway's CPU per metered call (py-spy). This signs the same canonical
request from plain values and derives the signing key once a day per secret; the result is
byte-for-byte botocore's (tests/gateway/test_sigv4.py signs with both).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from datetime import datetime
from urllib.parse import quote, urlsplit

# Headers botocore leaves out of the signature (hop-by-hop, tracing, the user agent).
UNSIGNED_HEADERS = frozenset(
    {
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)


@functools.lru_cache(maxsize=32)
def _signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def _host(parts) -> str:
    # The default port is left out, as botocore and every HTTP client leave it out of Host.
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.hostname if parts.port in (None, default) else f"{parts.hostname}:{parts.port}"


def _canonical_query(query: str) -> str:
    return "&".join(sorted("=".join(pair.partition("=")[::2]) for pair in query.split("&")))


def sign(
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    access_key: str,
    secret_key: str,
    token: str | None,
    region: str,
    service: str,
    now: datetime,
) -> dict[str, str]:
    """`headers` with X-Amz-Date, the session token if any, and Authorization added. `url` is
    already percent-encoded; its path is encoded once more for the canonical request, as
    botocore does for every service but S3."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    signed = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "date")}
    signed["X-Amz-Date"] = stamp
    if token:
        signed["X-Amz-Security-Token"] = token
    parts = urlsplit(url)
    canonical: dict[str, str] = {}
    for name, value in signed.items():
        lower = name.lower()
        if lower not in UNSIGNED_HEADERS:
            trimmed = " ".join(value.split())
            canonical[lower] = f"{canonical[lower]},{trimmed}" if lower in canonical else trimmed
    canonical.setdefault("host", _host(parts))
    names = sorted(canonical)
    signed_names = ";".join(names)
    request = "\n".join(
        (
            method.upper(),
            quote(parts.path or "/", safe="/~"),
            _canonical_query(parts.query) if parts.query else "",
            "".join(f"{name}:{canonical[name]}\n" for name in names),
            signed_names,
            hashlib.sha256(body).hexdigest(),
        )
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ("AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(request.encode()).hexdigest())
    )
    key = _signing_key(secret_key, day, region, service)
    signature = hmac.digest(key, to_sign.encode(), "sha256").hex()
    signed["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_names}, Signature={signature}"
    )
    return signed
