"""Configuration: defaults <- YAML <- environment, validated with errors that name the key."""

import pytest

from config.conf import ConfigError, load_config
from tests.fixtures.servers import run_manage


def write_yaml(tmp_path, text: str) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_are_the_seeds_values():
    config = load_config({})
    assert config.redis.hourly_summary_ttl == 90000
    assert config.redis.daily_cap_ttl == 90000
    assert config.redis.hourly_cap_ttl == 7200
    assert config.redis.usage_summary_prefix == "usage_summary:"
    # The cap policy (#15): cost limits a day of Claude Code work fits in, no token limit.
    caps = config.usage_caps
    assert (caps.default_daily_requests, caps.default_daily_tokens) == (5000, None)
    assert caps.default_daily_cost_cents == 5000
    assert (caps.default_hourly_cost_cents, caps.default_monthly_cost_cents) == (2000, 50000)
    assert config.usage_caps.enforce_caps is True
    assert config.usage_caps.grace_period_minutes == 5


def test_nothing_configured_means_the_embedded_default():
    config = load_config({})
    assert config.database.is_embedded
    assert config.redis.url is None
    assert config.celery.broker_url is None
    assert config.aws.upstream == "emulator"
    assert config.aws.resolved_endpoint == "http://127.0.0.1:8100"


def test_nested_keys_come_from_gateway_prefixed_environment():
    config = load_config(
        {
            "GATEWAY_USAGE_CAPS__ENFORCE_CAPS": "false",
            "GATEWAY_USAGE_CAPS__GRACE_PERIOD_MINUTES": "0.5",
            "GATEWAY_AUTH__ADMIN_EMAILS": "a@example.com, b@example.com",
            "GATEWAY_JWT__ACCESS_TOKEN_LIFETIME_SECONDS": "60",
        }
    )
    assert config.usage_caps.enforce_caps is False
    assert config.usage_caps.grace_period_minutes == 0.5
    assert config.auth.admin_emails == ["a@example.com", "b@example.com"]
    assert config.jwt.access_token_lifetime_seconds == 60


def test_well_known_names_stay_plain():
    config = load_config(
        {
            "PORT": "9000",
            "TLS_PORT": "9443",
            "DATABASE_URL": "postgres://u@db:5432/gw",
            "REDIS_URL": "redis://cache:6379/0",
            "CELERY_BROKER_URL": "redis://cache:6379/1",
            "AWS_REGION": "eu-west-1",
            "GATEWAY_SERVER__SECRET_KEY": "x" * 40,
        }
    )
    assert config.server.port == 9000
    assert config.server.tls_port == 9443
    assert config.database.url == "postgres://u@db:5432/gw"
    assert not config.database.is_embedded
    assert config.redis.url == "redis://cache:6379/0"
    assert config.celery.broker_url == "redis://cache:6379/1"
    assert config.aws.region == "eu-west-1"


def test_yaml_file_is_read_and_environment_wins_over_it(tmp_path):
    path = write_yaml(
        tmp_path,
        "usage_caps:\n  default_daily_requests: 50\n  enforce_caps: false\n"
        "redis:\n  hourly_cap_ttl: 100\n",
    )
    config = load_config(
        {"GATEWAY_CONFIG": path, "GATEWAY_USAGE_CAPS__DEFAULT_DAILY_REQUESTS": "70"}
    )
    assert config.usage_caps.default_daily_requests == 70  # env beats YAML
    assert config.usage_caps.enforce_caps is False  # YAML beats default
    assert config.redis.hourly_cap_ttl == 100
    assert config.redis.daily_cap_ttl == 90000  # default kept beside YAML siblings


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"GATEWAY_USAGE_CAPS__GRACE_PERIOD_MINUTES": "soon"},
            "usage_caps.grace_period_minutes: Input should be a valid number",
        ),
        ({"PORT": "70000"}, "server.port: Input should be less than or equal to 65535"),
        ({"GATEWAY_USAGE_CAPS__DEFAULT_DAILY_TOKENS": "0"}, "usage_caps.default_daily_tokens"),
        ({"GATEWAY_USAGE_CAPS__ENFORCE": "true"}, "usage_caps.enforce: Extra inputs"),
        ({"DATABASE_URL": "mysql://x/y"}, "database: unsupported database scheme 'mysql'"),
        ({"REDIS_URL": "http://cache"}, "redis: url must start with redis://"),
        ({"AWS_REGION": "moon-base-1x"}, "aws.region: String should match pattern"),
        ({"GATEWAY_AWS__ENDPOINT_URL": "ftp://x"}, "aws: endpoint_url must be an http(s) URL"),
        ({"GATEWAY_AWS__ACCESS_KEY_ID": "AKID"}, "aws: access_key_id and secret_access_key"),
        ({"TLS_CERTFILE": "/tmp/cert.pem"}, "server: tls_certfile and tls_keyfile"),
        ({"DATABASE_URL": "postgres://u@db/gw"}, "server.secret_key is required"),
        ({"GATEWAY_AUTH__PROVIDERS__MYSPACE__CLIENT_ID": "x"}, "unknown provider 'myspace'"),
    ],
)
def test_a_bad_value_is_named_in_one_line(environ, expected):
    with pytest.raises(ConfigError) as excinfo:
        load_config(environ)
    message = str(excinfo.value)
    assert expected in message
    assert "\n" not in message


def test_the_error_says_which_variable_held_the_bad_value():
    with pytest.raises(ConfigError, match=r"\(from GATEWAY_REDIS__HOURLY_CAP_TTL\)"):
        load_config({"GATEWAY_REDIS__HOURLY_CAP_TTL": "-1"})


def test_a_bad_yaml_value_names_the_file(tmp_path):
    path = write_yaml(tmp_path, "aws:\n  read_timeout: never\n")
    with pytest.raises(ConfigError, match=rf"aws.read_timeout: .* \(in {path}\)"):
        load_config({"GATEWAY_CONFIG": path})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a: [unclosed", "is not valid YAML"), ("- just\n- a list\n", "must hold a mapping")],
)
def test_a_malformed_yaml_file_is_rejected(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config({"GATEWAY_CONFIG": write_yaml(tmp_path, text)})


def test_a_missing_yaml_file_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="GATEWAY_CONFIG: cannot read"):
        load_config({"GATEWAY_CONFIG": str(tmp_path / "absent.yaml")})


def test_bedrock_upstream_uses_the_regional_endpoint_unless_overridden():
    config = load_config({"GATEWAY_AWS__UPSTREAM": "bedrock", "AWS_REGION": "eu-central-1"})
    assert config.aws.resolved_endpoint == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    override = load_config(
        {"GATEWAY_AWS__UPSTREAM": "bedrock", "GATEWAY_AWS__ENDPOINT_URL": "https://vpce.local/"}
    )
    assert override.aws.resolved_endpoint == "https://vpce.local"


def test_start_up_stops_with_one_line_naming_the_key():
    result = run_manage("check", env={"GATEWAY_USAGE_CAPS__ENFORCE_CAPS": "perhaps"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "configuration error: usage_caps.enforce_caps: Input should be a valid boolean, "
        "unable to interpret input (from GATEWAY_USAGE_CAPS__ENFORCE_CAPS)"
    ]


def test_start_up_with_a_yaml_file_and_redis_switches_the_counter_store(tmp_path):
    path = write_yaml(tmp_path, "redis:\n  url: redis://127.0.0.1:6379/9\n")
    code = (
        "from django.conf import settings; from usage.store import get_store; "
        "print(type(get_store()).__name__, settings.CACHES['default']['BACKEND'])"
    )
    result = run_manage("shell", "--no-imports", "-c", code, env={"GATEWAY_CONFIG": path})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["RedisStore", "django_redis.cache.RedisCache"]


def test_start_up_without_configuration_uses_the_embedded_store():
    code = (
        "from django.conf import settings; from usage.store import get_store; "
        "print(type(get_store()).__name__, settings.DATABASES['default']['ENGINE'], "
        "settings.CELERY_BROKER_URL)"
    )
    result = run_manage("shell", "--no-imports", "-c", code, env={})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "DatabaseStore",
        "django.db.backends.sqlite3",
        "filesystem://",
    ]
