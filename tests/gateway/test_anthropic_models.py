import json

import anthropic
import pytest
from anthropic.types import ModelInfo

from gateway.anthropic import AnthropicError, amodels_list, model_get, models_list
from gateway.model_defaults import DEFAULT_ALIASES
from gateway.model_map import model_map_invalidate
from gateway.models import ModelAlias
from tests.fixtures import canned_http
from tests.fixtures import model_map as model_map_fixtures

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_model_map")]
fresh_model_map = model_map_fixtures.fresh_model_map
thread_connections_closed = model_map_fixtures.thread_connections_closed
canned = canned_http.canned


def all_ids() -> list[str]:
    return [model["id"] for model in models_list(limit=1000)["data"]]


def test_it_lists_active_models_newest_first_in_anthropics_shape():
    page = models_list()
    assert set(page) == {"data", "has_more", "first_id", "last_id"}
    first = page["data"][0]
    assert first == {
        "type": "model",
        "id": "claude-fable-5-2",
        "display_name": "Claude Fable 5.2",
        "created_at": "1970-01-01T00:00:00Z",  # release date unknown: the epoch, as documented
        "lifecycle": "active",
    }
    assert page["first_id"] == "claude-fable-5-2"
    assert page["last_id"] == page["data"][-1]["id"]
    # 19 distinct active models fit the default page of 20.
    assert len(page["data"]) == 19
    assert page["has_more"] is False
    assert models_list(limit=5)["has_more"] is True


def test_each_bedrock_model_is_listed_once_under_its_canonical_name():
    ids = all_ids()
    assert "claude-haiku-4-5-20251001" in ids
    assert "claude-haiku-4-5" not in ids
    assert "claude-opus-4-20250514" in ids
    assert len(ids) == len(set(ids))
    active = {alias.bedrock_model_id for alias in DEFAULT_ALIASES if alias.is_active}
    assert len(ids) == len(active)
    # Oldest last, with its release date from its dated id.
    last = models_list(limit=1000)["data"][-1]
    assert last == {
        "type": "model",
        "id": "claude-opus-4-20250514",
        "display_name": "Claude Opus 4",
        "created_at": "2025-05-14T00:00:00Z",
        "lifecycle": "active",
    }


def test_inactive_models_are_not_listed():
    assert "claude-mythos-5-1" not in all_ids()
    ModelAlias.objects.filter(anthropic_name="claude-opus-5-5").update(is_active=False)
    model_map_invalidate()
    assert "claude-opus-5-5" not in all_ids()


def test_pages_follow_after_id_and_before_id():
    ids = all_ids()
    first = models_list(limit=3)
    assert [m["id"] for m in first["data"]] == ids[:3]
    second = models_list(limit=3, after_id=first["last_id"])
    assert [m["id"] for m in second["data"]] == ids[3:6]
    assert second["has_more"] is True
    back = models_list(limit=2, before_id=second["first_id"])
    assert [m["id"] for m in back["data"]] == ids[1:3]
    assert back["has_more"] is True
    last = models_list(limit=5, after_id=ids[-3])
    assert [m["id"] for m in last["data"]] == ids[-2:]
    assert last["has_more"] is False
    empty = models_list(after_id=ids[-1])
    assert empty == {"data": [], "has_more": False, "first_id": None, "last_id": None}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "many"},
        {"after_id": "claude-nope"},
        {"before_id": "claude-nope"},
        {"after_id": "claude-opus-5", "before_id": "claude-sonnet-5"},
    ],
)
def test_bad_paging_is_an_invalid_request_error(kwargs):
    with pytest.raises(AnthropicError) as caught:
        models_list(**kwargs)
    assert (caught.value.status, caught.value.type) == (400, "invalid_request_error")


def test_limit_may_come_as_a_query_string():
    assert len(models_list(limit="2")["data"]) == 2


@pytest.mark.usefixtures("thread_connections_closed")
async def test_async_list_is_the_same_page():
    page = await amodels_list(limit=4, after_id="claude-fable-5-2")
    assert [m["id"] for m in page["data"]] == [
        "claude-haiku-5-5",
        "claude-sonnet-5-5",
        "claude-fable-5-1",
        "claude-opus-5-5",
    ]


def test_model_get_answers_any_active_name_and_404s_otherwise():
    assert model_get("claude-haiku-4-5")["display_name"] == "Claude Haiku 4.5"
    with pytest.raises(AnthropicError) as caught:
        model_get("claude-mythos-5-1")
    assert (caught.value.status, caught.value.type) == (404, "not_found_error")


def test_the_sdk_lists_and_pages_our_models(canned):
    """The SDK's models.list() reads our page over HTTP and validates each entry."""
    page = models_list(limit=3)
    canned.answer(json.dumps(page).encode())
    client = anthropic.Anthropic(base_url=canned.url, api_key="SSOK_x", max_retries=0)
    listed = client.models.list(limit=3)
    assert [model.id for model in listed.data] == [m["id"] for m in page["data"]]
    assert listed.has_more is True
    assert listed.last_id == page["last_id"]
    assert canned.requests[0]["path"] == "/v1/models?limit=3"
    for entry in page["data"]:
        model = ModelInfo.model_validate(entry)
        assert model.lifecycle == "active"
        assert model.created_at.year == 1970
