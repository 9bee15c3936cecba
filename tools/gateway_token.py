#!/usr/bin/env python3
"""Print a gateway access token for Claude Code's `apiKeyHelper` (Python 3.9+, stdlib only).

    python3 gateway_token.py --url https://gateway.example.com

prints a valid access token on stdout and nothing else. It comes from a cache,
~/.cache/gateway/<host>.json (mode 0600; $XDG_CACHE_HOME is honoured); a token that has
expired or is about to is renewed silently with the cached refresh token. With no usable
refresh token (first run, device signed out, refresh token expired) it runs the device flow
(RFC 8628): it prints a URL and a code on stderr, opens the browser when there is one, and
waits until you approve the device in the gateway's /device page (or until --timeout).

Exit status: 0 with a token on stdout; 1 otherwise (the reason on stderr).

~/.claude/settings.json:
    {"apiKeyHelper": "python3 ~/.claude/gateway_token.py --url https://gateway.example.com",
     "env": {"ANTHROPIC_BASE_URL": "https://gateway.example.com/anthropic",
             "CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "240000"}}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import webbrowser

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_CLIENT_ID = "gateway-token"
USER_AGENT = "gateway-token/1 (python)"
HTTP_TIMEOUT = 30
# A cached token is handed out only while it has at least this much life left: the smaller of
# five minutes and a quarter of its lifetime (so that a short lifetime still gets used).
MAX_MARGIN_SECONDS = 300


class HelperError(Exception):
    """Stop with this message on stderr and exit status 1."""


class OAuthError(Exception):
    """An RFC 6749 error answer: `error` is its code."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- Cache ------------------------------------------------------------------------------------


def cache_path(url: str) -> str:
    """~/.cache/gateway/<host>[_<port>].json for this gateway."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "gateway").replace(":", "_")  # IPv6
    name = f"{host}_{parts.port}" if parts.port else host
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gateway", f"{name}.json")


def cache_read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cache_write(path: str, data: dict) -> None:
    """Write atomically, readable by the owner only (the directory too)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def cache_lock(path: str):
    """One helper at a time per gateway: two refreshing at once would race the rotation."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def margin(lifetime: float) -> float:
    return min(MAX_MARGIN_SECONDS, max(0.0, lifetime) / 4)


def usable(cached: dict, now: float) -> bool:
    token, expires_at = cached.get("access_token"), cached.get("expires_at")
    if not isinstance(token, str) or not isinstance(expires_at, (int, float)):
        return False
    return expires_at - now > margin(cached.get("lifetime") or 0)


# --- HTTP -------------------------------------------------------------------------------------


def post_form(url: str, params: dict, context: ssl.SSLContext | None) -> dict:
    """POST form-encoded parameters; the JSON answer, or OAuthError for an error body."""
    body = urllib.parse.urlencode(params).encode()
    request = urllib.request.Request(  # noqa: S310 - parse_args allows http(s) only
        url,
        data=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(  # noqa: S310 - http(s) only
            request, timeout=HTTP_TIMEOUT, context=context
        ) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            data = json.loads(exc.read() or b"{}")
        except ValueError:
            data = {}
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            raise OAuthError(data["error"], str(data.get("error_description") or "")) from None
        raise HelperError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HelperError(f"cannot reach {url}: {reason}") from None


def tokens_to_cache(url: str, client_id: str, answer: dict, now: float) -> dict:
    try:
        lifetime = float(answer["expires_in"])
        return {
            "url": url,
            "client_id": client_id,
            "access_token": str(answer["access_token"]),
            "refresh_token": str(answer["refresh_token"]),
            "lifetime": lifetime,
            "expires_at": now + lifetime,
        }
    except (KeyError, TypeError, ValueError):
        raise HelperError("the gateway's token answer is not understood") from None


# --- Flows ------------------------------------------------------------------------------------


def refresh(url: str, cached: dict, context: ssl.SSLContext | None) -> dict:
    now = time.time()
    answer = post_form(
        f"{url}/oauth/token",
        {
            "grant_type": "refresh_token",
            "refresh_token": cached["refresh_token"],
            "client_id": cached.get("client_id") or DEFAULT_CLIENT_ID,
        },
        context,
    )
    return tokens_to_cache(url, cached.get("client_id") or DEFAULT_CLIENT_ID, answer, now)


def has_browser() -> bool:
    if os.environ.get("GATEWAY_TOKEN_NO_BROWSER"):
        return False
    if sys.platform in ("darwin", "win32"):
        return True
    # Elsewhere only a graphical session: a text browser would take over Claude Code's terminal.
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def device_flow(args: argparse.Namespace, context: ssl.SSLContext | None) -> dict:
    url = args.url
    started = time.monotonic()
    asked = post_form(
        f"{url}/oauth/device/code",
        {"client_id": args.client_id, "device_name": args.name},
        context,
    )
    try:
        device_code = asked["device_code"]
        user_code = asked["user_code"]
        verification_uri = asked["verification_uri"]
        complete = asked.get("verification_uri_complete") or verification_uri
        expires_in = float(asked.get("expires_in") or 600)
        interval = float(asked.get("interval") or 5)
    except (KeyError, TypeError, ValueError):
        raise HelperError("the gateway's device code answer is not understood") from None
    say(f"To sign in to {url}, open {verification_uri} and enter the code {user_code}")
    say(f"  (or open {complete})")
    if not args.no_browser and has_browser():
        with contextlib.suppress(Exception):
            webbrowser.open(complete)
    deadline = started + min(expires_in, args.timeout if args.timeout else expires_in)
    say("Waiting for approval...")
    while True:
        if time.monotonic() + interval > deadline:
            raise HelperError(f"not approved in time: run `{sys.argv[0]} --url {url}` again")
        time.sleep(interval)
        now = time.time()
        try:
            answer = post_form(
                f"{url}/oauth/token",
                {
                    "grant_type": DEVICE_CODE_GRANT,
                    "device_code": device_code,
                    "client_id": args.client_id,
                },
                context,
            )
        except OAuthError as exc:
            if exc.error == "authorization_pending":
                continue
            if exc.error == "slow_down":
                interval += 5
                continue
            if exc.error == "access_denied":
                raise HelperError("the request was denied") from None
            if exc.error == "expired_token":
                raise HelperError("the code expired before it was approved: run again") from None
            raise HelperError(f"sign-in failed: {exc}") from None
        say("Signed in.")
        return tokens_to_cache(url, args.client_id, answer, now)


def get_token(args: argparse.Namespace) -> str:
    context = ssl.create_default_context(cafile=args.cacert) if args.cacert else None
    path = cache_path(args.url)
    with cache_lock(path):
        cached = cache_read(path)
        if cached.get("url") not in (None, args.url):
            cached = {}
        now = time.time()
        if usable(cached, now):
            return cached["access_token"]
        if isinstance(cached.get("refresh_token"), str):
            try:
                fresh = refresh(args.url, cached, context)
            except OAuthError:
                fresh = None  # revoked, used or expired: sign in again
                say("The gateway no longer accepts this device's sign-in.")
            except HelperError:
                # Gateway unreachable: a token that has not quite expired still serves.
                if cached.get("expires_at", 0) > now:
                    return cached["access_token"]
                raise
            if fresh is not None:
                cache_write(path, fresh)
                return fresh["access_token"]
        fresh = device_flow(args, context)
        cache_write(path, fresh)
        return fresh["access_token"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("GATEWAY_URL"),
        help="the gateway's address, e.g. https://gateway.example.com ($GATEWAY_URL)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0,
        help="seconds to wait for approval (default: until the code expires)",
    )
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help=argparse.SUPPRESS)
    parser.add_argument(
        "--name",
        default=f"Claude Code on {socket.gethostname()}",
        help="how this device is listed on the gateway's keys page",
    )
    parser.add_argument("--no-browser", action="store_true", help="never open a browser")
    parser.add_argument("--cacert", help="CA bundle to trust (a self-signed gateway)")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("--url (or $GATEWAY_URL) is required")
    args.url = args.url.rstrip("/")
    if urllib.parse.urlsplit(args.url).scheme not in ("http", "https"):
        parser.error("--url must start with https:// (or http://)")
    for suffix in ("/anthropic", "/bedrock"):
        if args.url.endswith(suffix):  # the Claude Code base URL pasted by mistake
            args.url = args.url[: -len(suffix)]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        token = get_token(args)
    except HelperError as exc:
        say(f"gateway_token: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
