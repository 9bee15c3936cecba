#!/usr/bin/env python3
"""A Claude Code status line for the gateway (Python 3.9+, stdlib only).

    python3 gateway_status.py --url https://gateway.example.com

prints one line: what you spent today (UTC) and the tightest usage cap's headroom and reset,
e.g. ``gateway $1.84 today · daily cap 37% · $3.16 left · resets 00:00 UTC`` (one call,
GET /api/usage/caps/status). From 80 % the cap is flagged (``⚠ daily cap 85%``), and
``reached`` once it refuses calls.

It uses the access token that gateway_token.py (Claude Code's apiKeyHelper) cached in
~/.cache/gateway/<host>.json. It never signs in or renews anything itself: without a valid
cached token it says so and Claude Code's next call runs the helper. It always exits 0, so a
gateway that cannot be reached never breaks the status line.

~/.claude/settings.json:
    {"statusLine": {"type": "command",
                    "command": "python3 ~/.claude/gateway_status.py --url https://gateway.example.com"}}
"""

# ruff: noqa: UP017 - runs on Python 3.9+ (datetime.UTC is 3.11+)
from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone  # timezone.utc: datetime.UTC needs 3.11

HTTP_TIMEOUT = 3
WARN_PERCENT = 80  # the tightest cap is flagged from here
USER_AGENT = "gateway-status/1 (python)"


def cache_path(url: str) -> str:
    """The file gateway_token.py keeps this gateway's tokens in (same rule)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "gateway").replace(":", "_")
    name = f"{host}_{parts.port}" if parts.port else host
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gateway", f"{name}.json")


def cached_token(url: str) -> str | None:
    try:
        with open(cache_path(url), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    token, expires_at = data.get("access_token"), data.get("expires_at")
    if isinstance(token, str) and isinstance(expires_at, (int, float)) and expires_at > time.time():
        return token
    return None


def get_json(url: str, token: str, context: ssl.SSLContext | None):
    request = urllib.request.Request(  # noqa: S310 - parse_args allows http(s) only
        url,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        },
    )
    with urllib.request.urlopen(  # noqa: S310 - http(s) only
        request, timeout=HTTP_TIMEOUT, context=context
    ) as response:
        return json.loads(response.read())


def money(cents: float) -> str:
    return f"${cents / 100:,.2f}"


def headroom(cap: dict) -> str:
    """What is left of the cap's tightest limit, in that limit's unit."""
    used, limits = cap.get("current_usage") or {}, cap.get("limits") or {}
    best, best_share = "", -1.0
    for field, unit in (("requests", "max_requests"), ("tokens", "max_tokens")):
        limit = limits.get(unit)
        if limit:
            share = float(used.get(field) or 0) / limit
            if share > best_share:
                left = max(0, int(limit - float(used.get(field) or 0)))
                best, best_share = f"{left:,} {field} left", share
    limit = limits.get("max_cost_cents")
    if limit:
        spent = float(used.get("cost_cents") or 0)
        if spent / limit > best_share:
            best = f"{money(max(0.0, limit - spent))} left"
    return best


def reset_text(value: str) -> str:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)
    except (AttributeError, ValueError):
        return ""
    now = datetime.now(timezone.utc)
    if when.date() == now.date() or (when - now).total_seconds() < 86400:
        return f"resets {when:%H:%M} UTC"
    return f"resets {when:%b} {when.day}"


def cap_text(cap: dict) -> str:
    """`daily cap 37%`; from 80 % a warning sign, and `reached` once it blocks."""
    percent = float(cap.get("percentage_used") or 0)
    text = f"{cap.get('cap_type', '')} cap {percent:.0f}%"
    if percent >= WARN_PERCENT:
        text = f"⚠ {text}"
    if cap.get("is_exceeded") and cap.get("enforced", True):
        text += " reached"
    return text


def status_line(url: str, token: str, context: ssl.SSLContext | None) -> str:
    status = get_json(f"{url}/api/usage/caps/status", token, context)
    if isinstance(status, dict):
        spent_cents = float(status.get("spend_today_cents") or 0)
        caps = status.get("caps")
    else:  # a gateway from before spend_today_cents: a list of caps, spend from the summary
        today = datetime.now(timezone.utc).strftime("%Y-%m-%dT00:00:00Z")
        query = urllib.parse.urlencode({"from": today})
        summary = get_json(f"{url}/api/usage/summary?{query}", token, context)
        spent_cents = float((summary.get("totals") or {}).get("cost_usd") or 0) * 100
        caps = status
    parts = [f"gateway {money(spent_cents)} today"]
    if isinstance(caps, list) and caps:
        cap = max(caps, key=lambda c: float(c.get("percentage_used") or 0))
        parts.append(cap_text(cap))
        for text in (headroom(cap), reset_text(cap.get("reset_time") or "")):
            if text:
                parts.append(text)
    return " · ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("GATEWAY_URL"), help="the gateway")
    parser.add_argument("--cacert", help="CA bundle to trust (a self-signed gateway)")
    args = parser.parse_args(argv)
    url = (args.url or "").rstrip("/")
    for suffix in ("/anthropic", "/bedrock"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        print("gateway: --url https://… missing")
        return 0
    token = cached_token(url)
    if token is None:
        print("gateway: not signed in (run gateway_token.py)")
        return 0
    context = ssl.create_default_context(cafile=args.cacert) if args.cacert else None
    try:
        print(status_line(url, token, context))
    except urllib.error.HTTPError as exc:
        print(f"gateway: HTTP {exc.code}")
    except (urllib.error.URLError, OSError, ValueError):
        print("gateway: unreachable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
