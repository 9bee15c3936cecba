"""Verification of AWS Signature Version 4, as Bedrock's front end does it.

A faithful reimplementation of the canonical request botocore (and the other AWS SDKs) sign
— double-encoded path, sorted query, the headers listed in ``SignedHeaders``, the payload's
SHA-256 — so a signature is accepted exactly when the configured secret produced it over the
bytes received.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from calendar import timegm
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import quote

from .errors import BedrockError

__all__ = ["SERVICE", "verify_sigv4"]

SERVICE = "bedrock"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_SECONDS = 300  # AWS rejects a signature more than 5 minutes off
_UNHASHED = ("UNSIGNED-PAYLOAD", "STREAMING-")


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 5.2.4, and AWS drops empty segments too (as botocore does when signing).
    if not path:
        return "/"
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
        else:
            out.append(segment)
    result = "/" + "/".join(out) if path.startswith("/") else "/".join(out)
    if path.endswith("/") and out:
        result += "/"
    return result


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = [pair.partition("=")[::2] for pair in query.split("&")]
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


@lru_cache(maxsize=256)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _parse_authorization(value: str) -> dict[str, str]:
    _, _, rest = value.partition(" ")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, _, val = item.strip().partition("=")
        fields[key] = val
    for key in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(key):
            raise BedrockError(
                "IncompleteSignatureException", f"Authorization header requires '{key}' parameter."
            )
    return fields


def _timestamp(amz_date: str) -> float:
    try:
        return float(timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        raise BedrockError(
            "IncompleteSignatureException",
            f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'.",
        ) from None


def verify_sigv4(
    *,
    authorization: str,
    method: str,
    raw_path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str],
    now: float | None = None,
) -> str:
    """Check a SigV4-signed request; returns the access key, raises ``BedrockError`` if not valid.

    ``headers`` maps lower-case names to values (repeated headers joined by commas).
    """
    fields = _parse_authorization(authorization)
    credential = fields["Credential"].split("/")
    if len(credential) != 5 or credential[4] != "aws4_request":
        raise BedrockError(
            "IncompleteSignatureException",
            f"Credential should be scoped to a valid region, not '{'/'.join(credential[2:3])}'.",
        )
    access_key, date, region, service, _ = credential
    secret = secrets.get(access_key)
    if secret is None:
        raise BedrockError("UnrecognizedClientException")
    if service != SERVICE:
        raise BedrockError(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{SERVICE}'. ",
        )
    amz_date = headers.get("x-amz-date")
    if not amz_date:
        raise BedrockError(
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    signed_at = _timestamp(amz_date)
    now = time.time() if now is None else now
    if abs(now - signed_at) > MAX_SKEW_SECONDS:
        current = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        raise BedrockError(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than the allowed 5 minutes of skew "
            f"around {current}.",
        )
    if amz_date[:8] != date:
        raise BedrockError(
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{date}' != '{amz_date[:8]}', from '{amz_date}'.",
        )

    declared_hash = headers.get("x-amz-content-sha256")
    body_hash = hashlib.sha256(body).hexdigest()
    if declared_hash and not declared_hash.startswith(_UNHASHED) and declared_hash != body_hash:
        raise BedrockError(
            "InvalidSignatureException",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    signed_names = fields["SignedHeaders"].split(";")
    canonical_headers = "".join(
        f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed_names
    )
    canonical_request = "\n".join(
        (
            method,
            quote(_remove_dot_segments(raw_path), safe="/~"),
            _canonical_query(query),
            canonical_headers,
            fields["SignedHeaders"],
            declared_hash or body_hash,
        )
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        (ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
    )
    expected = hmac.new(
        _signing_key(secret, date, region, service), string_to_sign.encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"]):
        default = BedrockError("InvalidSignatureException").message
        raise BedrockError(
            "InvalidSignatureException",
            f"{default}\n\nThe Canonical String for this request should have been\n"
            f"'{canonical_request}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n",
        )
    return access_key
