"""Issue #14's settings: key lifetimes, key hash secrets, device token lifetimes, OIDC's
require_email_verified."""

import pytest

from config.conf import ConfigError, load_config


def test_credential_settings_defaults():
    auth = load_config({}).auth
    assert auth.api_key_max_lifetime_days is None
    assert auth.api_key_default_lifetime_days is None
    assert auth.api_key_hash_keys == []
    assert auth.device_token_lifetime_seconds == 28800
    assert auth.device_refresh_lifetime_days == 30


def test_lifetimes_and_hash_keys_from_the_environment():
    auth = load_config(
        {
            "GATEWAY_AUTH__API_KEY_MAX_LIFETIME_DAYS": "365",
            "GATEWAY_AUTH__API_KEY_DEFAULT_LIFETIME_DAYS": "90",
            "GATEWAY_AUTH__API_KEY_HASH_KEYS": "n" * 32 + "," + "o" * 32,
        }
    ).auth
    assert (auth.api_key_max_lifetime_days, auth.api_key_default_lifetime_days) == (365, 90)
    assert auth.api_key_hash_keys == ["n" * 32, "o" * 32]


@pytest.mark.parametrize("value", ["none", "None", "", "null"])
def test_none_or_empty_leaves_a_lifetime_unset(value):
    auth = load_config({"GATEWAY_AUTH__API_KEY_MAX_LIFETIME_DAYS": value}).auth
    assert auth.api_key_max_lifetime_days is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"GATEWAY_AUTH__API_KEY_MAX_LIFETIME_DAYS": "0"}, "auth.api_key_max_lifetime_days"),
        ({"GATEWAY_AUTH__API_KEY_DEFAULT_LIFETIME_DAYS": "soon"}, "api_key_default_lifetime"),
        (
            {
                "GATEWAY_AUTH__API_KEY_MAX_LIFETIME_DAYS": "30",
                "GATEWAY_AUTH__API_KEY_DEFAULT_LIFETIME_DAYS": "90",
            },
            "api_key_default_lifetime_days must not exceed api_key_max_lifetime_days",
        ),
        ({"GATEWAY_AUTH__API_KEY_HASH_KEYS": "short"}, "api_key_hash_keys: each secret"),
        ({"GATEWAY_AUTH__DEVICE_TOKEN_LIFETIME_SECONDS": "0"}, "device_token_lifetime_seconds"),
    ],
)
def test_it_refuses_a_bad_credential_setting_naming_it(environ, expected):
    with pytest.raises(ConfigError) as excinfo:
        load_config(environ)
    assert expected in str(excinfo.value)


def test_oidc_providers_require_a_verified_email_unless_told_otherwise():
    base = {
        "GATEWAY_AUTH__OIDC__CORP__CLIENT_ID": "gateway",
        "GATEWAY_AUTH__OIDC__CORP__SERVER_URL": "https://sso.corp.test",
    }
    assert load_config(base).auth.oidc["corp"].require_email_verified is True
    relaxed = {**base, "GATEWAY_AUTH__OIDC__CORP__REQUIRE_EMAIL_VERIFIED": "false"}
    assert load_config(relaxed).auth.oidc["corp"].require_email_verified is False


def test_hash_keys_never_appear_in_a_repr():
    auth = load_config({"GATEWAY_AUTH__API_KEY_HASH_KEYS": "s" * 40}).auth
    assert "s" * 40 not in repr(auth)


# --- #15: team groups, offline_access ------------------------------------------------------------


def test_team_groups_default_to_none():
    assert load_config({}).auth.team_groups == {}


def test_team_groups_from_the_environment_as_json():
    auth = load_config({"GATEWAY_AUTH__TEAM_GROUPS": '{"eng": "Engineering", "ops": "Ops"}'}).auth
    assert auth.team_groups == {"eng": "Engineering", "ops": "Ops"}


def test_team_groups_that_are_not_json_name_the_key():
    with pytest.raises(ConfigError, match="team_groups"):
        load_config({"GATEWAY_AUTH__TEAM_GROUPS": "eng=Engineering"})


def test_oidc_apps_ask_for_offline_access_unless_turned_off():
    from config.settings import _social_providers

    env = {
        "GATEWAY_AUTH__OIDC__CORP__CLIENT_ID": "x",
        "GATEWAY_AUTH__OIDC__CORP__SERVER_URL": "https://idp.test",
        "GATEWAY_AUTH__OIDC__OLD__CLIENT_ID": "y",
        "GATEWAY_AUTH__OIDC__OLD__SERVER_URL": "https://old.test",
        "GATEWAY_AUTH__OIDC__OLD__OFFLINE_ACCESS": "false",
    }
    apps = {
        app["provider_id"]: app["settings"]
        for app in _social_providers(load_config(env).auth)["openid_connect"]["APPS"]
    }
    assert "offline_access" in apps["corp"]["scope"]
    assert "scope" not in apps["old"]  # allauth's default: openid, profile, email
