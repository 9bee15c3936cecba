"""Providers are enabled by configuration alone: auth.providers / auth.oidc -> allauth apps."""

from __future__ import annotations

import pytest

from config.conf import ConfigError, load_config
from config.settings import _social_providers


def providers_from(env: dict[str, str]) -> dict:
    return _social_providers(load_config(env).auth)


def test_nothing_configured_means_no_providers():
    assert providers_from({}) == {}


def test_each_named_provider_becomes_an_app_with_its_own_settings():
    env = {}
    for name in ("google", "github", "microsoft", "gitlab", "okta", "auth0"):
        env[f"GATEWAY_AUTH__PROVIDERS__{name.upper()}__CLIENT_ID"] = f"{name}-id"
        env[f"GATEWAY_AUTH__PROVIDERS__{name.upper()}__SECRET"] = f"{name}-secret"
    env["GATEWAY_AUTH__PROVIDERS__MICROSOFT__TENANT"] = "contoso.onmicrosoft.com"
    env["GATEWAY_AUTH__PROVIDERS__GITLAB__SERVER_URL"] = "https://gitlab.example.com/"
    env["GATEWAY_AUTH__PROVIDERS__OKTA__SERVER_URL"] = "https://dev-1.okta.com"
    env["GATEWAY_AUTH__PROVIDERS__AUTH0__SERVER_URL"] = "tenant.eu.auth0.com"
    env["GATEWAY_AUTH__ALLOWED_GITHUB_ORGS"] = "acme"
    providers = providers_from(env)
    assert set(providers) == {"google", "github", "microsoft", "gitlab", "okta", "auth0"}
    for name, entry in providers.items():
        assert entry["APPS"][0]["client_id"] == f"{name}-id"
        assert entry["APPS"][0]["secret"] == f"{name}-secret"
    assert providers["microsoft"]["APPS"][0]["settings"] == {"tenant": "contoso.onmicrosoft.com"}
    assert providers["gitlab"]["APPS"][0]["settings"] == {
        "gitlab_url": "https://gitlab.example.com"
    }
    assert providers["okta"]["OKTA_BASE_URL"] == "dev-1.okta.com"
    assert providers["auth0"]["AUTH0_URL"] == "https://tenant.eu.auth0.com"
    assert "read:org" in providers["github"]["SCOPE"]


def test_microsoft_defaults_to_work_accounts_only():
    env = {"GATEWAY_AUTH__PROVIDERS__MICROSOFT__CLIENT_ID": "x"}
    assert providers_from(env)["microsoft"]["APPS"][0]["settings"] == {"tenant": "organizations"}


def test_any_number_of_generic_oidc_providers():
    env = {
        "GATEWAY_AUTH__OIDC__CORP__CLIENT_ID": "a",
        "GATEWAY_AUTH__OIDC__CORP__SERVER_URL": "https://sso.corp.test",
        "GATEWAY_AUTH__OIDC__CORP__NAME": "Corp SSO",
        "GATEWAY_AUTH__OIDC__KEYCLOAK__CLIENT_ID": "b",
        "GATEWAY_AUTH__OIDC__KEYCLOAK__SERVER_URL": "https://kc.test/realms/x",
    }
    apps = providers_from(env)["openid_connect"]["APPS"]
    assert [(a["provider_id"], a["name"]) for a in apps] == [
        ("corp", "Corp SSO"),
        ("keycloak", "keycloak"),
    ]
    assert apps[1]["settings"]["server_url"] == "https://kc.test/realms/x"


def test_demo_provider_is_off_unless_turned_on():
    assert "openid_connect" not in providers_from({})
    apps = providers_from(
        {"GATEWAY_AUTH__DEMO_PROVIDER": "true", "GATEWAY_AUTH__DEMO_PROVIDER_PORT": "8311"}
    )["openid_connect"]["APPS"]
    assert apps[0]["provider_id"] == "demo"
    assert apps[0]["settings"]["server_url"] == "http://127.0.0.1:8311"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_AUTH__PROVIDERS__OKTA__CLIENT_ID": "x"}, "providers.okta.server_url"),
        ({"GATEWAY_AUTH__PROVIDERS__FACEBOOK__CLIENT_ID": "x"}, "unknown provider"),
        ({"GATEWAY_AUTH__OIDC__CORP__CLIENT_ID": "x"}, "oidc.corp.server_url"),
    ],
)
def test_incomplete_provider_configuration_fails_naming_the_key(env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(env)
