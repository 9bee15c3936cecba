import typing

import pytest
from anthropic.types.model_param import ModelParam
from django.urls import reverse

from emulator.models import KNOWN_MODELS
from gateway import model_map
from gateway.model_defaults import DEFAULT_ALIASES, model_aliases_install_defaults
from gateway.model_map import (
    aresolve_bedrock_model,
    model_map_invalidate,
    model_prefix,
    resolve_bedrock_model,
)
from gateway.models import ModelAlias
from tests.fixtures import model_map as model_map_fixtures

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_model_map")]
fresh_model_map = model_map_fixtures.fresh_model_map
thread_connections_closed = model_map_fixtures.thread_connections_closed
aws_config = model_map_fixtures.aws_config

SDK_MODELS = typing.get_args(typing.get_args(ModelParam)[0])
# Listed by the SDK but not served by Bedrock (claude-mythos-preview), or not yet
# (claude-mythos-5-1, -5-2: shipped inactive).
NOT_ON_BEDROCK = {"claude-mythos-preview", "claude-mythos-5-1", "claude-mythos-5-2"}


def test_sdk_lists_the_models_this_map_was_built_from():
    assert "claude-haiku-4-5" in SDK_MODELS
    assert "claude-opus-5-5" in SDK_MODELS
    assert len(SDK_MODELS) >= 22


@pytest.mark.parametrize("name", sorted(set(SDK_MODELS) - NOT_ON_BEDROCK))
def test_every_sdk_model_bedrock_serves_resolves_to_a_served_profile(name, aws_config):
    aws_config(region="us-east-1", model_prefix="auto")
    resolved = resolve_bedrock_model(name)
    assert resolved is not None
    assert resolved.startswith("us.anthropic.claude-")
    assert resolved.removeprefix("us.") in KNOWN_MODELS


@pytest.mark.parametrize("name", sorted(NOT_ON_BEDROCK))
def test_sdk_models_bedrock_does_not_serve_are_unknown(name):
    assert resolve_bedrock_model(name) is None


def test_defaults_name_the_bedrock_ids_from_clients_md():
    expected = {
        "claude-haiku-4-5": "anthropic.claude-haiku-4-5-20251001-v1:0",
        "claude-haiku-4-5-20251001": "anthropic.claude-haiku-4-5-20251001-v1:0",
        "claude-sonnet-4-5-20250929": "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "claude-opus-4-5": "anthropic.claude-opus-4-5-20251101-v1:0",
        "claude-sonnet-4-20250514": "anthropic.claude-sonnet-4-20250514-v1:0",
        "claude-opus-4-1": "anthropic.claude-opus-4-1-20250805-v1:0",
        "claude-opus-4-0": "anthropic.claude-opus-4-20250514-v1:0",
        "claude-opus-4-6": "anthropic.claude-opus-4-6-v1",
        "claude-sonnet-4-6": "anthropic.claude-sonnet-4-6",
        "claude-opus-4-8": "anthropic.claude-opus-4-8",
        "claude-opus-5-5": "anthropic.claude-opus-5-5",
        "claude-haiku-5-5": "anthropic.claude-haiku-5-5",
        "claude-fable-5-2": "anthropic.claude-fable-5-2",
        "claude-mythos-5": "anthropic.claude-mythos-5",
    }
    stored = dict(ModelAlias.objects.values_list("anthropic_name", "bedrock_model_id"))
    assert {name: stored[name] for name in expected} == expected


def test_every_active_default_is_a_model_the_emulator_serves():
    active = [alias for alias in DEFAULT_ALIASES if alias.is_active]
    assert {alias.bedrock_model_id for alias in active} <= KNOWN_MODELS


def test_installing_defaults_again_adds_nothing_and_keeps_edits():
    ModelAlias.objects.filter(anthropic_name="claude-opus-5").update(
        bedrock_model_id="anthropic.claude-opus-4-8"
    )
    ModelAlias.objects.filter(anthropic_name="claude-haiku-5-5").delete()
    assert model_aliases_install_defaults() == 1
    assert resolve_bedrock_model("claude-opus-5") == "us.anthropic.claude-opus-4-8"
    assert resolve_bedrock_model("claude-haiku-5-5") == "us.anthropic.claude-haiku-5-5"


@pytest.mark.parametrize(
    ("setting", "region", "prefix"),
    [
        ("auto", "us-east-1", "us."),
        ("auto", "us-west-2", "us."),
        ("auto", "eu-west-1", "eu."),
        ("auto", "eu-central-1", "eu."),
        ("auto", "ap-northeast-1", "apac."),
        ("auto", "ap-southeast-2", "apac."),
        ("auto", "us-gov-west-1", "us-gov."),
        ("auto", "ca-central-1", "global."),
        ("global", "eu-west-1", "global."),
        ("global.", "us-east-1", "global."),
        ("none", "us-east-1", ""),
        ("jp", "ap-northeast-1", "jp."),
        ("au.", "ap-southeast-2", "au."),
    ],
)
def test_model_prefix_rules(setting, region, prefix):
    assert model_prefix(setting=setting, region=region) == prefix


@pytest.mark.parametrize(
    ("region", "setting", "expected"),
    [
        ("us-east-1", "auto", "us.anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("eu-west-1", "auto", "eu.anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("ap-northeast-1", "auto", "apac.anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("eu-west-1", "global", "global.anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("us-east-1", "none", "anthropic.claude-haiku-4-5-20251001-v1:0"),
    ],
)
def test_resolve_applies_the_configured_prefix(region, setting, expected, aws_config):
    aws_config(region=region, model_prefix=setting)
    assert resolve_bedrock_model("claude-haiku-4-5") == expected


@pytest.mark.parametrize(
    "name",
    [
        "us.anthropic.claude-opus-5-5",
        "anthropic.claude-sonnet-4-6",
        "global.anthropic.claude-haiku-4-5-20251001-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-opus-4-8",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
    ],
)
def test_bedrock_ids_and_arns_pass_through_unchanged(name, aws_config):
    aws_config(region="eu-west-1", model_prefix="auto")
    assert resolve_bedrock_model(name) == name


def test_unknown_name_is_none():
    assert resolve_bedrock_model("claude-nonexistent-9") is None
    assert resolve_bedrock_model("") is None


def test_inactive_alias_is_unknown():
    ModelAlias.objects.filter(anthropic_name="claude-opus-4-7").update(is_active=False)
    model_map_invalidate()
    assert resolve_bedrock_model("claude-opus-4-7") is None


def test_stored_profile_id_is_used_without_adding_a_prefix(aws_config):
    aws_config(region="us-east-1", model_prefix="auto")
    ModelAlias.objects.create(
        anthropic_name="team-default", bedrock_model_id="global.anthropic.claude-sonnet-5-5"
    )
    model_map_invalidate()
    assert resolve_bedrock_model("team-default") == "global.anthropic.claude-sonnet-5-5"


def test_warm_resolution_makes_no_query(django_assert_num_queries):
    resolve_bedrock_model("claude-haiku-4-5")
    with django_assert_num_queries(0):
        for _ in range(100):
            assert resolve_bedrock_model("claude-opus-5-5") == "us.anthropic.claude-opus-5-5"


@pytest.mark.usefixtures("thread_connections_closed")
async def test_async_resolution_loads_the_map_once_and_answers_from_memory():
    assert await aresolve_bedrock_model("claude-sonnet-5") == "us.anthropic.claude-sonnet-5"
    # Warm: the snapshot answers straight from memory.
    assert model_map._state.snapshot is not None
    assert await aresolve_bedrock_model("claude-sonnet-4-6") == "us.anthropic.claude-sonnet-4-6"
    assert await aresolve_bedrock_model("claude-unknown") is None


def test_a_change_by_another_process_shows_after_the_check_interval(monkeypatch):
    """Another process's admin edit: a row changed and the cache's version key bumped."""
    assert resolve_bedrock_model("claude-opus-4-8") == "us.anthropic.claude-opus-4-8"
    ModelAlias.objects.filter(anthropic_name="claude-opus-4-8").update(
        bedrock_model_id="anthropic.claude-opus-5"
    )
    snapshot = model_map._state.snapshot
    from django.core.cache import cache

    cache.set(model_map.VERSION_KEY, "edited-elsewhere", timeout=None)
    # Within the interval this process still answers from its snapshot...
    assert resolve_bedrock_model("claude-opus-4-8") == "us.anthropic.claude-opus-4-8"
    assert model_map._state.snapshot is snapshot
    # ...and after it, sees the new version and reloads.
    monkeypatch.setattr(model_map, "VERSION_CHECK_SECONDS", 0.0)
    assert resolve_bedrock_model("claude-opus-4-8") == "us.anthropic.claude-opus-5"


def test_snapshot_is_reloaded_when_older_than_its_max_age(monkeypatch):
    """The embedded locmem cache is per process: age bounds how stale another's edit can be."""
    assert resolve_bedrock_model("claude-opus-4-8") == "us.anthropic.claude-opus-4-8"
    ModelAlias.objects.filter(anthropic_name="claude-opus-4-8").update(is_active=False)
    monkeypatch.setattr(model_map, "LOCAL_MAX_AGE_SECONDS", 0.0)
    monkeypatch.setattr(model_map, "MAX_AGE_SECONDS", 0.0)
    assert resolve_bedrock_model("claude-opus-4-8") is None


@pytest.fixture
def admin_client_logged_in(client, django_user_model):
    admin = django_user_model.objects.create_superuser(
        username="admin", email="admin@example.com", password="pw"
    )
    client.force_login(admin)
    return client


def test_admin_edit_is_visible_at_once_in_the_same_process(admin_client_logged_in):
    assert (
        resolve_bedrock_model("claude-haiku-4-5") == "us.anthropic.claude-haiku-4-5-20251001-v1:0"
    )
    alias = ModelAlias.objects.get(anthropic_name="claude-haiku-4-5")
    response = admin_client_logged_in.post(
        reverse("admin:gateway_modelalias_change", args=[alias.pk]),
        {
            "anthropic_name": "claude-haiku-4-5",
            "bedrock_model_id": "anthropic.claude-haiku-5-5",
            "display_name": "Claude Haiku (pinned to 5.5)",
            "released_at": "",
            "is_active": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert resolve_bedrock_model("claude-haiku-4-5") == "us.anthropic.claude-haiku-5-5"


def test_admin_add_and_delete_are_visible_at_once(admin_client_logged_in):
    assert resolve_bedrock_model("claude-house") is None
    response = admin_client_logged_in.post(
        reverse("admin:gateway_modelalias_add"),
        {
            "anthropic_name": "claude-house",
            "bedrock_model_id": "anthropic.claude-sonnet-5-5",
            "display_name": "House model",
            "released_at": "",
            "is_active": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert resolve_bedrock_model("claude-house") == "us.anthropic.claude-sonnet-5-5"
    alias = ModelAlias.objects.get(anthropic_name="claude-house")
    response = admin_client_logged_in.post(
        reverse("admin:gateway_modelalias_delete", args=[alias.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert resolve_bedrock_model("claude-house") is None


def test_admin_list_edit_and_bulk_actions_are_visible_at_once(admin_client_logged_in):
    url = reverse("admin:gateway_modelalias_changelist")
    assert admin_client_logged_in.get(url).status_code == 200
    alias = ModelAlias.objects.get(anthropic_name="claude-opus-4-7")
    response = admin_client_logged_in.post(
        url, {"action": "deactivate", "_selected_action": [alias.pk], "index": "0"}
    )
    assert response.status_code == 302
    assert resolve_bedrock_model("claude-opus-4-7") is None
    response = admin_client_logged_in.post(
        url, {"action": "activate", "_selected_action": [alias.pk], "index": "0"}
    )
    assert response.status_code == 302
    assert resolve_bedrock_model("claude-opus-4-7") == "us.anthropic.claude-opus-4-7"


def test_admin_rejects_a_bedrock_id_that_is_not_one(admin_client_logged_in):
    response = admin_client_logged_in.post(
        reverse("admin:gateway_modelalias_add"),
        {"anthropic_name": "claude-x", "bedrock_model_id": "gpt-4", "is_active": "on"},
    )
    assert response.status_code == 200
    assert "A Bedrock model id" in response.content.decode()
    assert not ModelAlias.objects.filter(anthropic_name="claude-x").exists()
