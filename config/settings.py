"""Django settings, all derived from the one validated configuration object (config/conf.py)."""

import contextlib
import os
import secrets
import sys
from datetime import timedelta
from typing import Any

import dj_database_url

from config.bodylimit import IMPORT_BODY_BYTES
from config.conf import BASE_DIR, ConfigError, load_config, secret_value

try:
    GATEWAY = load_config()
except ConfigError as exc:
    # One line naming the key, no traceback: the operator fixes the value and restarts.
    sys.stderr.write(f"configuration error: {exc}\n")
    raise SystemExit(2) from None

VAR_DIR = GATEWAY.server.data_path
VAR_DIR.mkdir(parents=True, exist_ok=True)
# Database, secrets, TLS key, queue: for the server's user only.
VAR_DIR.chmod(0o700)


def _private_file(path, content: str = "") -> None:  # a Path
    """Create `path` readable by the owner only (0600) from the first byte; no-op if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def _demo_secret(name: str) -> str:
    """A random secret kept under var/: only the embedded demo mode may run without one."""
    path = VAR_DIR / name
    _private_file(path, secrets.token_urlsafe(48))
    path.chmod(0o600)  # also a file left by an older version
    return path.read_text().strip()


SECRET_KEY = GATEWAY.server.secret_key or _demo_secret("secret_key")
DEBUG = GATEWAY.server.debug
# server.public_url adds its host and origin to what server.allowed_hosts and
# server.csrf_trusted_origins list (loopback only by default).
ALLOWED_HOSTS = GATEWAY.server.effective_allowed_hosts
CSRF_TRUSTED_ORIGINS = GATEWAY.server.effective_csrf_trusted_origins

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc as static files (no CDN)
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    *(f"allauth.socialaccount.providers.{name}" for name in sorted(GATEWAY.auth.providers)),
    "django_celery_beat",
    "accounts",
    "costs",
    "usage",
    "caps",
    "gateway",
]

MIDDLEWARE = [
    # First: /health answers any Host (load balancers probe node addresses).
    "gateway.health.HealthMiddleware",
    # The proxy's `Host $host` drops a non-default port of server.public_url: put it back.
    "config.proxy.PublicHostMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "config.static.AsyncWhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"
SITE_ID = 1
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
_db = dj_database_url.parse(GATEWAY.database.url)
if GATEWAY.database.is_embedded:
    # Several processes (web, jobs, tests' servers) share the file: wait for locks rather than
    # fail, and take the write lock up front so transactions never deadlock on upgrade.
    _db["OPTIONS"] = {
        "timeout": GATEWAY.database.timeout_seconds,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not memory) so that gateway processes started by tests see the test database;
    # one per test run, so that concurrent runs never share one.
    _db["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    # SQLite creates the file with the umask's mode (and its -wal/-shm with the file's): make
    # it 0600 before the first connection.
    if _db.get("NAME") and _db["NAME"] != ":memory:":
        with contextlib.suppress(OSError):  # a missing folder: SQLite says so itself
            _private_file(_db["NAME"])
            for _suffix in ("", "-wal", "-shm", "-journal"):
                if os.path.exists(_db["NAME"] + _suffix):
                    os.chmod(_db["NAME"] + _suffix, 0o600)
else:
    # Under ASGI each request runs in its own context, so Django would open (and authenticate)
    # a new PostgreSQL connection per request; a pool keeps them (with CONN_MAX_AGE at its
    # default, 0, as pooling requires).
    _db["OPTIONS"] = {
        "pool": {
            "min_size": 1,
            "max_size": GATEWAY.database.pool_max_size,
            "timeout": min(10, GATEWAY.database.timeout_seconds),
        },
        "options": f"-c lock_timeout={round(GATEWAY.database.timeout_seconds * 1000)}",
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and counter store --------------------------------------------------------------------
if GATEWAY.redis.url and GATEWAY.redis.cluster:
    # django-redis does not speak Redis Cluster: Django's own Redis backend with a cluster
    # client (config/cluster_cache.py).
    CACHES: dict[str, dict[str, Any]] = {
        "default": {
            "BACKEND": "config.cluster_cache.RedisClusterCache",
            "LOCATION": GATEWAY.redis.url,
            "KEY_PREFIX": "gw",
        }
    }
elif GATEWAY.redis.url:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": GATEWAY.redis.url,
            "KEY_PREFIX": "gw",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth ---------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapters.SocialAccountAdapter"
ACCOUNT_FORMS = {"signup": "accounts.forms.LocalSignupForm"}
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = (
    ["email*", "password1*", "password2*"] if GATEWAY.auth.local_passwords else ["email*"]
)
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_LOGOUT_ON_GET = False
# OAuth callbacks (and any absolute link allauth builds) on https behind the TLS proxy.
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if GATEWAY.server.public_https else "http"
# Without auth.local_passwords allauth serves no password, signup or e-mail views at all.
SOCIALACCOUNT_ONLY = not GATEWAY.auth.local_passwords
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
SOCIALACCOUNT_LOGIN_ON_GET = False
# The OpenID Connect refresh token (SocialToken.token_secret) is what the hourly identity
# refresh (accounts.offboarding) presents to the provider to learn who has left.
SOCIALACCOUNT_STORE_TOKENS = True
SOCIALACCOUNT_REQUESTS_TIMEOUT = 10


def _oidc_app_settings(server_url: str, offline_access: bool) -> dict:
    """An OpenID Connect app's allauth settings; `offline_access` asks for a refresh token."""
    app_settings = {"server_url": server_url, "oauth_pkce_enabled": True}
    if offline_access:
        app_settings["scope"] = ["openid", "profile", "email", "offline_access"]
    return app_settings


def _social_providers(auth) -> dict:
    """SOCIALACCOUNT_PROVIDERS from auth.providers / auth.oidc: apps by configuration alone."""
    providers: dict = {}
    for provider_id, cfg in auth.providers.items():
        app = {"client_id": cfg.client_id, "secret": cfg.secret, "key": ""}
        if cfg.name:
            app["name"] = cfg.name
        entry: dict = {"APPS": [app]}
        server = (cfg.server_url or "").rstrip("/")
        if provider_id == "github":
            entry["SCOPE"] = ["read:user", "user:email"]
            if auth.allowed_github_orgs or auth.team_groups:
                entry["SCOPE"].append("read:org")  # orgs and teams: the check, team sync
            if server:
                entry["GITHUB_URL"] = server  # GitHub Enterprise Server
        elif provider_id == "microsoft":
            app["settings"] = {"tenant": cfg.tenant or "organizations"}
        elif provider_id == "gitlab" and server:
            app["settings"] = {"gitlab_url": server}
        elif provider_id == "okta":
            entry["OKTA_BASE_URL"] = server.split("://", 1)[-1]
        elif provider_id == "auth0":
            entry["AUTH0_URL"] = server if "://" in server else f"https://{server}"
        providers[provider_id] = entry
    oidc = {
        key: (cfg.name or key, cfg.client_id, cfg.secret, cfg.server_url, cfg.offline_access)
        for key, cfg in auth.oidc.items()
    }
    if auth.demo_provider and "demo" not in oidc:
        # accounts.demo_idp, started by the serve command with client id/secret "demo".
        demo_url = f"http://127.0.0.1:{auth.demo_provider_port}"
        # No offline_access: the demo provider forgets its refresh tokens when it restarts,
        # and the hourly identity refresh would then deactivate every demo account.
        oidc["demo"] = ("Demo sign-in (any e-mail)", "demo", "demo", demo_url, False)
    if oidc:
        providers["openid_connect"] = {
            "APPS": [
                {
                    "provider_id": key,
                    "name": name,
                    "client_id": client_id,
                    "secret": secret,
                    "settings": _oidc_app_settings(server_url, offline_access),
                }
                for key, (name, client_id, secret, server_url, offline_access) in oidc.items()
            ]
        }
    return providers


SOCIALACCOUNT_PROVIDERS = _social_providers(GATEWAY.auth)

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=GATEWAY.jwt.access_token_lifetime_seconds),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=GATEWAY.jwt.refresh_token_lifetime_days),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": secret_value(GATEWAY.jwt.signing_key) or SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.GatewayAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's defaults, with JSON nested at most config.jsonlimits.MAX_DEPTH levels.
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Gateway API",
    "DESCRIPTION": "Management API of the Bedrock / Anthropic gateway.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema needs a credential (session, API key or JWT); the docs pages a session.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery -------------------------------------------------------------------------------------
if GATEWAY.celery.broker_url:
    CELERY_BROKER_URL = GATEWAY.celery.broker_url
else:
    # The embedded broker: kombu's filesystem transport, so beat and a worker run with no
    # service installed.
    _queue = VAR_DIR / "celery"
    for _sub in ("out", "processed", "control"):
        (_queue / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue / "out"),
        "data_folder_out": str(_queue / "out"),
        "processed_folder": str(_queue / "processed"),
        "control_folder": str(_queue / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = GATEWAY.celery.task_always_eager
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_TIME_LIMIT = 600
CELERY_TASK_SOFT_TIME_LIMIT = 540
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- I18n, static -------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- Security -----------------------------------------------------------------------------------
# Request bodies are limited per route before Django reads them (config/bodylimit.py):
# server.max_api_body_bytes here, 5 MB on the price CSV imports. Django's own limit on form
# data is the largest of those, so that it never refuses what the guard let through (the
# import's Apply posts the previewed CSV, up to 5 MB, as a form field).
DATA_UPLOAD_MAX_MEMORY_SIZE = max(GATEWAY.server.max_api_body_bytes, IMPORT_BODY_BYTES)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
CSRF_FAILURE_VIEW = "config.proxy.csrf_failure"
# Behind a TLS-terminating proxy (server.public_url set): it tells which scheme the client
# used. The proxy must set (overwrite) X-Forwarded-Proto on every request it forwards.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if GATEWAY.server.public_url else None
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = GATEWAY.server.public_https
# Sent on https responses only (SecurityMiddleware); never on the plain loopback listener.
SECURE_HSTS_SECONDS = GATEWAY.server.hsts_seconds if GATEWAY.server.public_https else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = GATEWAY.server.hsts_include_subdomains
SECURE_HSTS_PRELOAD = GATEWAY.server.hsts_preload

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}
