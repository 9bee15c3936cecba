"""The gateway's configuration: defaults <- YAML file (``GATEWAY_CONFIG``) <- environment.

Every setting has a YAML path (``usage_caps.enforce_caps``) and an environment name made from
it: ``GATEWAY_`` + the path in capitals with ``__`` between levels
(``GATEWAY_USAGE_CAPS__ENFORCE_CAPS``). A few well-known names stay plain (``PORT``,
``DATABASE_URL``, ``REDIS_URL``, ...; see ``PLAIN_ENV``). Lists are given in the environment as
comma-separated values or JSON. This module imports nothing from Django so that it can be
validated (and tested) before Django starts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

BASE_DIR = Path(__file__).resolve().parent.parent
ENV_PREFIX = "GATEWAY_"
CONFIG_FILE_ENV = "GATEWAY_CONFIG"

# Well-known variable -> YAML path. Everything else is GATEWAY_<PATH>.
PLAIN_ENV: dict[str, tuple[str, ...]] = {
    "PORT": ("server", "port"),
    "TLS_PORT": ("server", "tls_port"),
    "TLS_CERTFILE": ("server", "tls_certfile"),
    "TLS_KEYFILE": ("server", "tls_keyfile"),
    "DATABASE_URL": ("database", "url"),
    "REDIS_URL": ("redis", "url"),
    "CELERY_BROKER_URL": ("celery", "broker_url"),
    "AWS_REGION": ("aws", "region"),
}


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message is one line naming the key."""


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


StrList = Annotated[list[str], BeforeValidator(_comma_list)]


def _json_mapping(value: Any) -> Any:
    """A mapping given in the environment as JSON (`{"eng": "Engineering"}`)."""
    if isinstance(value, str):
        text = value.strip()
        return json.loads(text) if text else {}
    return value


StrMap = Annotated[dict[str, str], BeforeValidator(_json_mapping)]


def _unset_if_blank(value: Any) -> Any:
    """An optional setting given as "" or "none" (any case) in the environment is unset."""
    if isinstance(value, str) and value.strip().lower() in {"", "none", "null"}:
        return None
    return value


OptionalDays = Annotated[Annotated[float, Field(gt=0)] | None, BeforeValidator(_unset_if_blank)]


def secret_value(value: SecretStr | str | None) -> str | None:
    """The plain text of a secret setting (SecretStr; a str too, as tests may set one)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


# Field names whose values never appear in a repr (Django's debug page prints settings with
# repr): the same words Django's SafeExceptionReporterFilter hides, plus passwords in URLs.
_SENSITIVE_NAME = re.compile(r"KEY|SECRET|TOKEN|PASS|SIGNATURE", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")
_MASK = "********"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
    # Django's LazySettings asks every value it returns for `_mask_wrapped`; without the
    # attribute, pydantic's __getattr__ raises for it, and `settings.GATEWAY` cost ~3 us.
    _mask_wrapped: ClassVar[bool] = True

    def __repr_args__(self):  # pydantic's ReprArgs
        for name, value in super().__repr_args__():
            if not isinstance(value, str | SecretStr | list) or name is None:
                yield name, value
            elif _SENSITIVE_NAME.search(name):
                yield name, _MASK
            elif isinstance(value, str) and "url" in name:
                yield name, _URL_PASSWORD.sub(rf"\1{_MASK}@", value)
            else:
                yield name, value


def _is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    tls_port: int = Field(8443, ge=1, le=65535)
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    # Where `make run` keeps a generated self-signed pair when none is configured.
    tls_autogenerate: bool = True
    secret_key: str | None = Field(None, min_length=32)
    debug: bool = False
    # The URL people and clients use, e.g. https://gateway.example.com (behind a TLS-terminating
    # proxy or load balancer). It adds its host to allowed_hosts and its origin to
    # csrf_trusted_origins, trusts X-Forwarded-Proto from the proxy, and, when https, makes
    # cookies Secure, sends HSTS and builds https:// OAuth callbacks and client snippets.
    public_url: str | None = None
    # Host names served (beyond public_url's); loopback by default. "*" serves any.
    allowed_hosts: StrList = ["127.0.0.1", "localhost", "[::1]"]
    csrf_trusted_origins: StrList = []
    # Strict-Transport-Security when public_url is https (0 = none); no preload unless asked.
    hsts_seconds: int = Field(365 * 86400, ge=0)
    hsts_include_subdomains: bool = False
    hsts_preload: bool = False
    # The proxy reads request bodies itself; Claude Code sends long contexts.
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0)
    # Every other route (/api, admin, dashboard, /health): Django's own 2.5 MB. The price CSV
    # import routes have their own 5 MB (see config/bodylimit.py).
    max_api_body_bytes: int = Field(2_621_440, gt=0)
    # /metrics is open to loopback; elsewhere it needs this bearer token.
    metrics_token: SecretStr | None = None
    shutdown_grace_seconds: int = Field(30, ge=0)
    # Everything the server keeps on disk: the embedded database, generated secrets and TLS
    # pair, the embedded broker, the usage-record spool. Relative paths are from the project.
    data_dir: str = "var"

    @property
    def data_path(self) -> Path:
        return BASE_DIR / self.data_dir  # an absolute data_dir stands on its own

    @field_validator("public_url", mode="before")
    @classmethod
    def _public_url(cls, value: Any) -> str | None:
        value = _unset_if_blank(value)
        if value is None:
            return None
        parts = urlsplit(str(value).strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be the gateway's http(s) URL, e.g. https://gateway.example.com")
        if parts.path not in {"", "/"} or parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError("must be scheme://host[:port] only (the gateway is served at /)")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        default = {"http": 80, "https": 443}[parts.scheme]
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        return f"{parts.scheme}://{host}" + (f":{port}" if port not in {None, default} else "")

    @property
    def public_scheme(self) -> str | None:
        return urlsplit(self.public_url).scheme if self.public_url else None

    @property
    def public_host(self) -> str | None:
        """public_url's host as ALLOWED_HOSTS spells it (IPv6 in brackets, no port)."""
        if not self.public_url:
            return None
        hostname = urlsplit(self.public_url).hostname or ""
        return f"[{hostname}]" if ":" in hostname else hostname

    @property
    def public_https(self) -> bool:
        return self.public_scheme == "https"

    @property
    def effective_allowed_hosts(self) -> list[str]:
        hosts = list(self.allowed_hosts)
        if self.public_host and self.public_host not in hosts:
            hosts.append(self.public_host)
        return hosts

    @property
    def effective_csrf_trusted_origins(self) -> list[str]:
        origins = list(self.csrf_trusted_origins)
        if self.public_url and self.public_url not in origins:
            origins.append(self.public_url)
        return origins

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if self.debug and not _is_loopback(self.host):
            # Django's debug page shows settings and tracebacks to whoever triggers an error.
            raise ValueError("debug: true is refused unless server.host is loopback")
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("tls_certfile and tls_keyfile must be given together")
        return self


class DatabaseConfig(Section):
    # Empty: the embedded database, `gateway.sqlite3` in `server.data_dir`.
    url: str = ""
    # PostgreSQL connections kept per process (a psycopg pool).
    pool_max_size: int = Field(20, ge=1)
    # How long a statement waits for a lock (SQLite's busy timeout, PostgreSQL's lock_timeout)
    # or for a pooled connection before it fails; a usage record that cannot be written in
    # time goes to the spool instead.
    timeout_seconds: float = Field(30, gt=0)

    @model_validator(mode="after")
    def _scheme(self) -> DatabaseConfig:
        scheme = self.url.split("://", 1)[0]
        if self.url and scheme not in {"sqlite", "postgres", "postgresql", "pgsql"}:
            raise ValueError(f"unsupported database scheme {scheme!r} (use sqlite or postgres)")
        return self

    @property
    def is_embedded(self) -> bool:
        return self.url.startswith("sqlite")


class RedisConfig(Section):
    """The counter store and cache; no url means the embedded store (the database)."""

    url: str | None = None
    # url names any one node of a Redis Cluster (counters, caps, credential and Django cache);
    # the Celery broker stays a single Redis (celery.broker_url).
    cluster: bool = False
    usage_summary_prefix: str = "usage_summary:"
    usage_cap_prefix: str = "usage_cap:"
    hourly_summary_ttl: int = Field(90000, gt=0)
    daily_cap_ttl: int = Field(90000, gt=0)
    hourly_cap_ttl: int = Field(7200, gt=0)
    # Past the longest month's end, so a monthly counter outlives its window.
    monthly_cap_ttl: int = Field(32 * 86400 + 3600, gt=0)
    # A Claude Code session's cost counter lives this long after its last call.
    session_cap_ttl: int = Field(7 * 86400, gt=0)

    @model_validator(mode="after")
    def _scheme(self) -> RedisConfig:
        if self.url and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        return self


OptionalLimit = Annotated[Annotated[int, Field(gt=0)] | None, BeforeValidator(_unset_if_blank)]


class UsageCapsConfig(Section):
    """The cap policy (`default_<period>_<limit>`) applies live to every user who has no
    administrator cap of that period; `none` unsets a limit. A value set here (YAML or the
    environment) wins over an edit in admin; the others are edited in admin (caps.CapPolicy).

    The built-in policy lets a day of Claude Code work and stops a runaway (README, "Caps"):
    cost is what limits, so no token limit (tokens do not map to dollars across models, and a
    token limit below Claude Code's max_tokens makes every call "uncovered")."""

    default_hourly_requests: OptionalLimit = None
    default_hourly_tokens: OptionalLimit = None
    default_hourly_cost_cents: OptionalLimit = 2000
    default_daily_requests: OptionalLimit = 5000
    default_daily_tokens: OptionalLimit = None
    default_daily_cost_cents: OptionalLimit = 5000
    default_monthly_requests: OptionalLimit = None
    default_monthly_tokens: OptionalLimit = None
    default_monthly_cost_cents: OptionalLimit = 50000
    # An administrator cap on each Claude Code session's cost (x-claude-code-session-id).
    default_session_cost_cents: OptionalLimit = None
    enforce_caps: bool = True
    grace_period_minutes: float = Field(5, ge=0)
    # Output estimate = min(max_tokens, this): Claude Code asks for 128k on every call.
    output_estimate_ceiling: int = Field(8192, gt=0)
    # A reservation held by a dead worker is released after this many seconds.
    reservation_lease_seconds: int = Field(900, gt=0)
    # When the counter store is unreachable: closed (503), open (serve and reconcile later),
    # or closed only for users who have a cost cap.
    store_failure_mode: Literal["closed", "open", "closed_for_cost_caps"] = "closed_for_cost_caps"
    # count_tokens is free upstream but not unlimited: calls per user per UTC minute.
    count_tokens_per_minute: int = Field(60, gt=0)
    # Calls of one user in flight at once (Claude Code runs subagents in parallel); null = any.
    max_in_flight_per_user: int | None = Field(32, gt=0)
    # Calls of one user in flight at once whose max_tokens does not fit what is left under a
    # token or cost cap ("uncovered"): a cap is overshot by at most this many calls.
    max_uncovered_in_flight: int = Field(1, gt=0)


class CeleryConfig(Section):
    """No broker url means the embedded broker: files under var/, no service needed."""

    broker_url: str | None = None
    task_always_eager: bool = False


class AwsConfig(Section):
    """The upstream: the local emulator by default, real Bedrock when configured."""

    upstream: Literal["emulator", "bedrock"] = "emulator"
    # Model families /bedrock serves: those whose answers carry usage the gateway reads.
    served_model_families: StrList = ["anthropic"]
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    # Overrides the regional endpoint (a VPC endpoint, a proxy, the emulator elsewhere).
    endpoint_url: str | None = None
    emulator_port: int = Field(8100, ge=1, le=65535)
    # Explicit keys, else botocore's default chain. AWS_BEARER_TOKEN_BEDROCK is never read:
    # clients set it for themselves; the gateway's own Bedrock API key is bedrock_api_key.
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    bedrock_api_key: SecretStr | None = None
    connect_timeout: float = Field(5, gt=0)
    read_timeout: float = Field(300, gt=0)
    # Each stream holds one upstream connection for its life: size this for concurrent streams.
    max_pool_connections: int = Field(1000, gt=0)
    # Prefix for Anthropic model names -> inference profiles: auto derives us./eu./apac.
    # from the region; "global", "none" or an explicit prefix otherwise.
    model_prefix: str = "auto"

    @model_validator(mode="after")
    def _keys(self) -> AwsConfig:
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("access_key_id and secret_access_key must be given together")
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            raise ValueError("endpoint_url must be an http(s) URL")
        return self

    @property
    def resolved_endpoint(self) -> str:
        if self.endpoint_url:
            return self.endpoint_url.rstrip("/")
        if self.upstream == "emulator":
            return f"http://127.0.0.1:{self.emulator_port}"
        return f"https://bedrock-runtime.{self.region}.amazonaws.com"


class OAuthProviderConfig(Section):
    client_id: str
    secret: str = ""
    # OIDC issuer / Okta or Auth0 domain / GitLab server / Microsoft tenant, where needed.
    server_url: str | None = None
    tenant: str | None = None
    name: str | None = None


class OidcProviderConfig(OAuthProviderConfig):
    # Refuse a sign-in unless the provider vouches for the e-mail (`email_verified: true`):
    # the e-mail decides the allowed domains, the admin list and which account is signed in.
    require_email_verified: bool = True
    # Ask for `offline_access`, so that the provider issues a refresh token: the hourly
    # identity refresh (accounts.offboarding) deactivates whoever the provider no longer
    # knows. Turn off for a provider that refuses the scope (it then refreshes nobody).
    offline_access: bool = True


class AuthConfig(Section):
    admin_emails: StrList = []
    allowed_email_domains: StrList = []
    allowed_github_orgs: StrList = []
    local_passwords: bool = False
    # Providers by allauth id: google, github, microsoft, gitlab, okta, auth0.
    providers: dict[str, OAuthProviderConfig] = {}
    # Generic OpenID Connect providers by a short id of our choosing (it appears in the
    # callback URL: /accounts/oidc/<id>/login/callback/).
    oidc: dict[str, OidcProviderConfig] = {}
    api_key_prefix: str = Field("SSOK_", min_length=2, max_length=11)
    # How long an authenticated key or user may be served from the cache at most; revocation
    # is immediate regardless (it deletes entries / moves the generation).
    credential_cache_seconds: int = Field(300, gt=0)
    # API key lifetimes: a key created without an expiry expires after the default; a
    # requested expiry beyond the maximum is refused. Unset (None): keys may be permanent.
    api_key_max_lifetime_days: OptionalDays = None
    api_key_default_lifetime_days: OptionalDays = None
    # Secrets that hash API keys, newest first: the first hashes new keys, all verify. A
    # secret's version is its position counted from the end (the last is version 1); keys
    # store theirs. Unset: server.secret_key is version 1. Only grow the list at the front.
    api_key_hash_keys: StrList = []
    # Device sign-in (declared for later work): its access and refresh token lifetimes.
    device_token_lifetime_seconds: int = Field(28800, gt=0)
    device_refresh_lifetime_days: float = Field(30, gt=0)
    # The demo sign-in of `make run`: the local OpenID Connect provider (accounts.demo_idp) on
    # loopback, listed as "Demo sign-in". Anyone can sign in as any e-mail: never turn it on
    # where others can reach the gateway.
    demo_provider: bool = False
    demo_provider_port: int = Field(8200, ge=1, le=65535)
    # Failed credentials (API key / JWT) from one client address: above the limit within a
    # window, 429 for the rest of it (accounts/throttle.py). Expired genuine ones do not count.
    failed_auth_limit: int = Field(50, gt=0)
    failed_auth_window_seconds: int = Field(60, gt=0)
    # Django admin's password sign-in: failures per user and per address within the window.
    admin_login_failure_limit: int = Field(5, gt=0)
    admin_login_window_seconds: int = Field(900, gt=0)
    # Identity provider groups -> team names ({"eng": "Engineering"}): at each OpenID Connect
    # sign-in the first group of the `groups` claim that is listed here decides the user's team
    # (created when missing). Empty: teams are set by hand only.
    team_groups: StrMap = {}

    @model_validator(mode="after")
    def _known_providers(self) -> AuthConfig:
        known = {"google", "github", "microsoft", "gitlab", "okta", "auth0"}
        unknown = set(self.providers) - known
        if unknown:
            raise ValueError(f"unknown provider {sorted(unknown)[0]!r}; known: {sorted(known)}")
        for key in ("okta", "auth0"):
            if key in self.providers and not self.providers[key].server_url:
                raise ValueError(f"providers.{key}.server_url (the {key} domain) is required")
        for key, provider in self.oidc.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", key):
                raise ValueError(f"oidc.{key}: ids are lowercase letters, digits, - and _")
            if not provider.server_url:
                raise ValueError(f"oidc.{key}.server_url (the issuer URL) is required")
        default, maximum = self.api_key_default_lifetime_days, self.api_key_max_lifetime_days
        if default is not None and maximum is not None and default > maximum:
            raise ValueError(
                "api_key_default_lifetime_days must not exceed api_key_max_lifetime_days"
            )
        for secret in self.api_key_hash_keys:
            if len(secret) < 32:
                raise ValueError("api_key_hash_keys: each secret needs at least 32 characters")
        return self


class JwtConfig(Section):
    signing_key: SecretStr | None = Field(None, min_length=32)
    access_token_lifetime_seconds: int = Field(3600, gt=0)
    refresh_token_lifetime_days: float = Field(90, gt=0)


class UsageConfig(Section):
    # Usage records older than this many days are deleted by the nightly purge once their hour
    # is rolled up (summaries are kept forever); `none` keeps every record.
    retention_days: Annotated[
        Annotated[int, Field(gt=0)] | None, BeforeValidator(_unset_if_blank)
    ] = 400


class GatewayConfig(Section):
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    usage_caps: UsageCapsConfig = UsageCapsConfig()
    usage: UsageConfig = UsageConfig()
    celery: CeleryConfig = CeleryConfig()
    aws: AwsConfig = AwsConfig()
    auth: AuthConfig = AuthConfig()
    jwt: JwtConfig = JwtConfig()

    @model_validator(mode="after")
    def _embedded_database(self) -> GatewayConfig:
        if not self.database.url:
            self.database.url = f"sqlite:///{self.server.data_path / 'gateway.sqlite3'}"
        return self

    @model_validator(mode="after")
    def _demo_provider_safe(self) -> GatewayConfig:
        # Anyone reaching the demo sign-in signs in as any e-mail: it stays off (silently)
        # unless the server listens on loopback only and no real identity provider is set.
        auth = self.auth
        if auth.demo_provider and (
            not _is_loopback(self.server.host) or auth.providers or auth.oidc
        ):
            auth.demo_provider = False
        return self

    @model_validator(mode="after")
    def _secrets(self) -> GatewayConfig:
        # Secrets have defaults only in the embedded demo mode (see settings.py).
        if not self.database.is_embedded and not self.server.secret_key:
            raise ValueError("server.secret_key is required when DATABASE_URL is not SQLite")
        return self


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        node = tree.get(part)
        if not isinstance(node, dict):
            node = tree[part] = {}
        tree = node
    tree[path[-1]] = value


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_tree(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    tree: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for name, path in PLAIN_ENV.items():
        if environ.get(name):
            _set_path(tree, path, environ[name])
            sources[path] = name
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part)
        if path:
            _set_path(tree, path, value)
            sources[path] = name
    return tree, sources


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise ConfigError(f"{CONFIG_FILE_ENV}: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{CONFIG_FILE_ENV}: {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{CONFIG_FILE_ENV}: {path} must hold a mapping at the top level")
    return data


def load_config(environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Build the validated configuration, or raise ConfigError naming the bad key."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    yaml_path = environ.get(CONFIG_FILE_ENV)
    if yaml_path:
        data = _read_yaml(yaml_path)
    env_data, sources = _env_tree(environ)
    data = _merge(data, env_data)
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = tuple(str(part) for part in error["loc"])
        origin = sources.get(path)
        where = f" (from {origin})" if origin else (f" (in {yaml_path})" if yaml_path else "")
        message = error["msg"].removeprefix("Value error, ")
        key = ".".join(path)
        raise ConfigError(f"{key}: {message}{where}" if key else f"{message}{where}") from None
