"""The usage page (filters, pagination) and its CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from accounts.services import api_key_create
from costs.money import Usage
from tests.fixtures.calls import SONNET

pytestmark = [
    pytest.mark.django_db,
    # The sync test client collects the async stream (served as a stream under ASGI).
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous"),
]

HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


def export(client, query: str = "") -> list[list[str]]:
    response = client.get(f"/usage/export.csv{query}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="usage-')
    assert response.is_async  # streamed without holding a thread under ASGI
    body = b"".join(response).decode()  # the test client is sync: Django collects the stream
    return list(csv.reader(io.StringIO(body)))


def test_usage_page_lists_own_calls_only(owner, stranger, owner_client, record_claude_code_call):
    record_claude_code_call(owner, model_id=SONNET)
    record_claude_code_call(stranger, model_id=HAIKU)
    page = owner_client.get("/usage")
    assert page.status_code == 200
    assert page.context["page"].paginator.count == 1
    html = page.content.decode()
    assert SONNET in html
    assert HAIKU not in html  # neither in the table nor in the model filter's choices


def test_usage_filters_by_model_key_dates_and_result(owner, owner_client, record_claude_code_call):
    key = api_key_create(user=owner, name="ci").api_key
    now = datetime.now(UTC)
    record_claude_code_call(owner, model_id=SONNET, api_key_id=key.pk)
    record_claude_code_call(owner, model_id=HAIKU)
    record_claude_code_call(owner, model_id=HAIKU, started_at=now - timedelta(days=3))
    record_claude_code_call(
        owner, model_id=SONNET, upstream_status=429, error_type="ThrottlingException"
    )

    def count(query: str) -> int:
        response = owner_client.get(f"/usage?{query}")
        assert response.status_code == 200
        return response.context["page"].paginator.count

    assert count("") == 4
    assert count(f"model={HAIKU.split('.', 1)[1]}") == 2  # by base model id
    assert count(f"key={key.pk}") == 1
    today = now.date().isoformat()
    assert count(f"from={today}&to={today}") == 3
    old = (now - timedelta(days=3)).date().isoformat()
    assert count(f"to={old}") == 1
    assert count("status=error") == 1
    assert count("status=success") == 3


def test_usage_paginates(owner, owner_client, record_claude_code_call):
    for _ in range(55):
        record_claude_code_call(owner)
    first = owner_client.get("/usage")
    assert len(first.context["page"].object_list) == 50
    assert b"Page 1 of 2" in first.content
    second = owner_client.get("/usage?page=2")
    assert len(second.context["page"].object_list) == 5


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("from=2026-02-30", "from", "Enter a valid date."),
        ("from=2026-03-02&to=2026-03-01", "to", "Must be on or after the start date."),
        ("key=999999", "key", "Select a valid choice."),
        ("model=<script>alert(1)</script>", "model", "Select a valid choice."),
    ],
)
def test_usage_filters_show_field_errors(owner_client, query, field, message):
    response = owner_client.get(f"/usage?{query}")
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors[field])
    html = response.content.decode()
    assert 'class="field-error"' in html
    assert "<script>alert(1)</script>" not in html
    assert owner_client.get(f"/usage/export.csv?{query}").status_code == 400


def test_another_users_key_is_not_a_filter_choice(owner_client, stranger, record_claude_code_call):
    theirs = api_key_create(user=stranger, name="theirs").api_key
    record_claude_code_call(stranger, api_key_id=theirs.pk)
    response = owner_client.get(f"/usage?key={theirs.pk}")
    assert "key" in response.context["form"].errors
    assert response.context["page"] is None


def test_csv_export_holds_the_filtered_records(
    owner, stranger, owner_client, record_claude_code_call
):
    key = api_key_create(user=owner, name="laptop").api_key
    record_claude_code_call(
        owner,
        model_id=SONNET,
        api_key_id=key.pk,
        usage=Usage(input_tokens=1_000_000, output_tokens=0),
        session_id="s-1",
    )
    record_claude_code_call(owner, model_id=HAIKU)
    record_claude_code_call(stranger, model_id=SONNET)
    rows = export(owner_client)
    header, body = rows[0], rows[1:]
    assert header[:3] == ["started_at", "model_id", "base_model_id"]
    assert len(body) == 2
    sonnet = next(r for r in body if r[1] == SONNET)
    named = dict(zip(header, sonnet, strict=True))
    assert named["api_key"] == key.hint
    assert named["api_key_name"] == "laptop"
    assert named["input_tokens"] == "1000000"
    assert named["cost_usd"] == "3.000000"
    assert named["session_id"] == "s-1"
    only_haiku = export(owner_client, f"?model={HAIKU.split('.', 1)[1]}")
    assert [r[1] for r in only_haiku[1:]] == [HAIKU]


def test_csv_export_neutralises_formulas(owner, owner_client, record_claude_code_call):
    key = api_key_create(user=owner, name='=HYPERLINK("http://evil","x")').api_key
    record_claude_code_call(
        owner, api_key_id=key.pk, session_id="+cmd|' /C calc'!A0", model_id="@SUM(1)"
    )
    record_claude_code_call(owner, api_key_id=key.pk, session_id="-2+3", model_id=SONNET)
    header, *body = export(owner_client)
    cells = [dict(zip(header, row, strict=True)) for row in body]
    names = {c["api_key_name"] for c in cells}
    assert names == {'\'=HYPERLINK("http://evil","x")'}
    assert {c["session_id"] for c in cells} == {"'+cmd|' /C calc'!A0", "'-2+3"}
    assert "'@SUM(1)" in {c["model_id"] for c in cells}


def test_csv_export_streams_in_batches(owner, owner_client, record_claude_code_call, monkeypatch):
    from usage import views

    monkeypatch.setattr(views, "EXPORT_BATCH", 7)
    for _ in range(20):
        record_claude_code_call(owner)
    rows = export(owner_client)
    assert len(rows) == 21
    started = [row[0] for row in rows[1:]]
    assert started == sorted(started, reverse=True)
    request_ids = [row[-1] for row in rows[1:]]
    assert len(set(request_ids)) == 20  # every record once across the batch edges
