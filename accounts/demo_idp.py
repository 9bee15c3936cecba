"""A small OpenID Connect provider: the tests' identity provider and the demo sign-in.

A real HTTP server (stdlib ``http.server``, no Django) speaking the authorization code flow:

    GET  /.well-known/openid-configuration   discovery
    GET  /authorize                          a form: type the e-mail to sign in as
    POST /authorize                          sign in (or ``action=deny``: error=access_denied)
    POST /token                              code -> access token + RS256 id_token (code: single
                                             use, expires after ``code_ttl`` seconds; PKCE S256),
                                             and a refresh token when the scope has
                                             ``offline_access``; ``grant_type=refresh_token``
                                             -> fresh tokens (the refresh token rotates)
    GET  /userinfo                           Bearer access token -> claims
    GET  /jwks                               the signing key, generated at start

``GET /authorize?...&login_hint=a@b.c&prompt=none`` signs in at once (tests and scripts).
From Python, ``set_groups(email, [...])`` sets the ``groups`` claim of an e-mail and
``remove_user(email)`` makes the provider forget one (its refresh tokens then answer
``invalid_grant``, and it can no longer sign in), as a directory does when someone leaves.
Anyone can sign in as any e-mail: it is for tests and the embedded demo on loopback, never for
a deployment that others can reach.

    python -m accounts.demo_idp --port 8200 --client-id demo --client-secret demo

The gateway then needs (see README): GATEWAY_AUTH__OIDC__DEMO__SERVER_URL=http://127.0.0.1:8200,
GATEWAY_AUTH__OIDC__DEMO__CLIENT_ID=demo, GATEWAY_AUTH__OIDC__DEMO__SECRET=demo,
GATEWAY_AUTH__OIDC__DEMO__NAME="Demo sign-in".
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import html
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from config import clock

MAX_BODY = 64 * 1024
AUTHORIZE_PARAMS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
)


@dataclass
class _Grant:
    email: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    expires_at: float
    used: bool = False


@dataclass
class DemoIdP:
    """The provider's state; ``start()`` serves it in a thread, ``serve_forever()`` in front."""

    client_id: str = "demo"
    client_secret: str = "demo"  # noqa: S105 - a demo default, overridden on the command line
    host: str = "127.0.0.1"
    port: int = 0
    public_url: str | None = None
    code_ttl: float = 60.0
    token_ttl: int = 3600
    # The `email_verified` claim sent for every e-mail (None: the claim is left out); tests
    # set False to see an unverified e-mail refused.
    email_verified: bool | None = True
    # A refresh grant answers with a new refresh token and retires the old one.
    rotate_refresh_tokens: bool = True
    # True: the token endpoint answers 503, as a provider in an outage does.
    outage: bool = False
    codes: dict[str, _Grant] = field(default_factory=dict)
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    # refresh token -> (e-mail, scope)
    refresh_tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    # The `groups` claim by e-mail (no claim at all for an e-mail not here).
    groups: dict[str, list[str]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)
        self.server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def start(self) -> DemoIdP:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve_forever(self) -> None:
        try:
            self.server.serve_forever()
        finally:
            self.server.server_close()

    # --- the directory ----------------------------------------------------------------------

    def set_groups(self, email: str, groups: list[str] | None) -> None:
        """The `groups` claim sent for `email` from now on (None: no claim)."""
        with self.lock:
            if groups is None:
                self.groups.pop(email.lower(), None)
            else:
                self.groups[email.lower()] = list(groups)

    def remove_user(self, email: str) -> None:
        """Forget a person: their tokens stop working and they can no longer sign in."""
        email = email.lower()
        with self.lock:
            self.removed.add(email)
            self.refresh_tokens = {
                t: grant for t, grant in self.refresh_tokens.items() if grant[0] != email
            }
            self.access_tokens = {
                t: entry for t, entry in self.access_tokens.items() if entry[0] != email
            }

    def is_removed(self, email: str) -> bool:
        with self.lock:
            return email.lower() in self.removed

    def reset(self) -> None:
        """Back to an empty directory (tests share one provider)."""
        with self.lock:
            self.groups.clear()
            self.removed.clear()
        self.outage = False
        self.rotate_refresh_tokens = True

    # --- protocol ---------------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "userinfo_endpoint": f"{self.url}/userinfo",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": [
                "sub",
                "email",
                "email_verified",
                "name",
                "preferred_username",
                "groups",
            ],
        }

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def claims(self, email: str) -> dict[str, Any]:
        local = email.split("@", 1)[0]
        claims: dict[str, Any] = {
            "sub": "demo-" + hashlib.sha256(email.encode()).hexdigest()[:24],
            "email": email,
            "email_verified": self.email_verified,
            "name": local.replace(".", " ").title(),
            "preferred_username": local,
        }
        if self.email_verified is None:
            del claims["email_verified"]
        with self.lock:
            if email in self.groups:
                claims["groups"] = list(self.groups[email])
        return claims

    def issue_code(self, params: dict[str, str], email: str) -> str:
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.codes[code] = _Grant(
                email=email,
                client_id=params["client_id"],
                redirect_uri=params["redirect_uri"],
                scope=params.get("scope", "openid"),
                nonce=params.get("nonce") or None,
                code_challenge=params.get("code_challenge") or None,
                expires_at=clock.timestamp() + self.code_ttl,
            )
        return code

    def exchange(self, form: dict[str, str], basic: tuple[str, str] | None) -> dict[str, Any]:
        """The token endpoint's answer, or raise _OAuthError."""
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if not (
            secrets.compare_digest(client_id, self.client_id)
            and secrets.compare_digest(secret, self.client_secret)
        ):
            raise _OAuthError("invalid_client", 401)
        if form.get("grant_type") == "refresh_token":
            return self._refresh(form.get("refresh_token", ""), client_id)
        if form.get("grant_type") != "authorization_code":
            raise _OAuthError("unsupported_grant_type")
        with self.lock:
            grant = self.codes.get(form.get("code", ""))
            if grant is None or grant.used or grant.expires_at <= clock.timestamp():
                raise _OAuthError("invalid_grant")
            grant.used = True  # single use, even when the checks below fail
        if grant.client_id != client_id or grant.redirect_uri != form.get("redirect_uri"):
            raise _OAuthError("invalid_grant")
        if grant.code_challenge:
            verifier = form.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if not secrets.compare_digest(challenge, grant.code_challenge):
                raise _OAuthError("invalid_grant")
        if self.is_removed(grant.email):
            raise _OAuthError("invalid_grant")
        return self._tokens(grant.email, client_id, grant.scope, grant.nonce)

    def _refresh(self, refresh_token: str, client_id: str) -> dict[str, Any]:
        """A refresh grant: invalid_grant for an unknown token or a removed person."""
        with self.lock:
            entry = self.refresh_tokens.get(refresh_token)
            if entry is None or entry[0] in self.removed:
                raise _OAuthError("invalid_grant")
            if self.rotate_refresh_tokens:
                del self.refresh_tokens[refresh_token]
        email, scope = entry
        return self._tokens(email, client_id, scope, None, reuse_refresh=refresh_token)

    def _tokens(
        self,
        email: str,
        client_id: str,
        scope: str,
        nonce: str | None,
        reuse_refresh: str | None = None,
    ) -> dict[str, Any]:
        """The token endpoint's success answer for `email`."""
        access = secrets.token_urlsafe(32)
        now = int(clock.timestamp())
        with self.lock:
            self.access_tokens[access] = (email, now + self.token_ttl)
        id_claims = {
            **self.claims(email),
            "iss": self.url,
            "aud": client_id,
            "iat": now,
            "exp": now + self.token_ttl,
            "jti": secrets.token_hex(16),
        }
        if nonce:
            id_claims["nonce"] = nonce
        id_token = jwt.encode(
            id_claims, self.private_key, algorithm="RS256", headers={"kid": self.kid}
        )
        answer = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.token_ttl,
            "scope": scope,
            "id_token": id_token,
        }
        if "offline_access" in scope.split():
            # Rotating: a new refresh token each time; else the same one again.
            refresh = (
                secrets.token_urlsafe(32)
                if reuse_refresh is None or self.rotate_refresh_tokens
                else reuse_refresh
            )
            with self.lock:
                self.refresh_tokens[refresh] = (email, scope)
            answer["refresh_token"] = refresh
        return answer

    def userinfo(self, authorization: str) -> dict[str, Any]:
        scheme, _, token = authorization.partition(" ")
        with self.lock:
            entry = self.access_tokens.get(token) if scheme.lower() == "bearer" else None
        if entry is None or entry[1] <= clock.timestamp():
            raise _OAuthError("invalid_token", 401)
        return self.claims(entry[0])


class _OAuthError(Exception):
    def __init__(self, error: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


_FORM = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Demo sign-in</title></head>
<body><main>
<h1>Demo identity provider</h1>
<p>Type the e-mail address to sign in as. This provider is for tests and demos only.</p>
<form method="post" action="/authorize">
{hidden}
<label for="email">E-mail</label>
<input id="email" name="email" type="email" required autofocus value="{email}">
<button type="submit" name="action" value="allow">Sign in</button>
<button type="submit" name="action" value="deny" formnovalidate>Cancel</button>
</form>
</main></body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    """The provider's routes; `_handler_for` binds a subclass to one DemoIdP."""

    idp: DemoIdP
    server_version = "DemoIdP/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and `make run` have their own output

    # --- helpers ---
    def _send(self, status: int, body: bytes, content_type: str, extra=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: dict[str, Any], extra=None) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", extra)

    def _text(self, status: int, message: str) -> None:
        self._send(status, message.encode(), "text/plain; charset=utf-8")

    def _redirect(self, location: str) -> None:
        self._send(302, b"", "text/plain", {"Location": location})

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise _OAuthError("invalid_request", 413)
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
        return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    def _basic(self) -> tuple[str, str] | None:
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            client_id, _, secret = base64.b64decode(value).decode().partition(":")
        except ValueError:
            raise _OAuthError("invalid_client", 401) from None
        return client_id, secret

    def _authorize_params(self, params: dict[str, str]) -> str | None:
        """An error message if the request cannot be answered by redirect."""
        if params.get("client_id") != self.idp.client_id:
            return "unknown client_id"
        redirect = urlparse(params.get("redirect_uri", ""))
        if redirect.scheme not in ("http", "https") or not redirect.netloc:
            return "redirect_uri must be an absolute http(s) URL"
        return None

    def _back(self, params: dict[str, str], **result: str) -> None:
        query = dict(result)
        if params.get("state"):
            query["state"] = params["state"]
        separator = "&" if "?" in params["redirect_uri"] else "?"
        self._redirect(params["redirect_uri"] + separator + urlencode(query))

    # --- routes ---
    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if url.path == "/.well-known/openid-configuration":
            self._json(200, self.idp.discovery())
        elif url.path == "/jwks":
            self._json(200, self.idp.jwks())
        elif url.path == "/userinfo":
            try:
                self._json(200, self.idp.userinfo(self.headers.get("Authorization") or ""))
            except _OAuthError as exc:
                self._json(exc.status, {"error": exc.error}, {"WWW-Authenticate": "Bearer"})
        elif url.path == "/authorize":
            self._authorize_get(query)
        elif url.path == "/health":
            self._json(200, {"status": "ok"})
        else:
            self._text(404, "not found")

    def _authorize_get(self, query: dict[str, str]) -> None:
        problem = self._authorize_params(query)
        if problem:
            self._text(400, problem)
            return
        if query.get("response_type") != "code":
            self._back(query, error="unsupported_response_type")
            return
        hint = query.get("login_hint", "")
        if query.get("prompt") == "none":
            if "@" not in hint:
                self._back(query, error="login_required")
            elif self.idp.is_removed(hint.strip()):
                self._back(query, error="access_denied")
            else:
                self._back(query, code=self.idp.issue_code(query, hint.strip().lower()))
            return
        hidden = "\n".join(
            f'<input type="hidden" name="{name}" value="{html.escape(query[name])}">'
            for name in AUTHORIZE_PARAMS
            if name in query
        )
        page = _FORM.format(hidden=hidden, email=html.escape(hint))
        self._send(200, page.encode(), "text/html; charset=utf-8")

    def do_POST(self) -> None:
        path = urlparse(self.path).path
        try:
            form = self._form()
            if path == "/token" and self.idp.outage:
                self._json(503, {"error": "temporarily_unavailable"})
            elif path == "/token":
                self._json(200, self.idp.exchange(form, self._basic()), {"Pragma": "no-cache"})
            elif path == "/authorize":
                self._authorize_post(form)
            else:
                self._text(404, "not found")
        except _OAuthError as exc:
            self._json(exc.status, {"error": exc.error})

    def _authorize_post(self, form: dict[str, str]) -> None:
        problem = self._authorize_params(form)
        if problem:
            self._text(400, problem)
            return
        if form.get("action") == "deny":
            self._back(form, error="access_denied", error_description="The user cancelled.")
            return
        email = form.get("email", "").strip().lower()
        if "@" not in email or len(email) > 254:
            self._text(400, "type an e-mail address")
            return
        if self.idp.is_removed(email):
            self._back(form, error="access_denied", error_description="Unknown person.")
            return
        self._back(form, code=self.idp.issue_code(form, email))


def _handler_for(idp: DemoIdP) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"idp": idp})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--client-id", default="demo")
    parser.add_argument("--client-secret", default="demo")
    parser.add_argument("--public-url", help="the issuer URL when not http://HOST:PORT")
    parser.add_argument("--code-ttl", type=float, default=60.0)
    args = parser.parse_args(argv)
    idp = DemoIdP(
        client_id=args.client_id,
        client_secret=args.client_secret,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        code_ttl=args.code_ttl,
    )
    print(f"demo OpenID Connect provider at {idp.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        idp.serve_forever()


if __name__ == "__main__":
    main()
