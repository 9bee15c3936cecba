"""usage_record_many: a batch keeps every rule of usage_record (rows, live counters once,
idempotency, late calls folded into persisted hours)."""

from datetime import UTC, datetime

import pytest
import time_machine

from costs.money import Usage
from tests.fixtures.calls import call_for
from tests.fixtures.personas import unique_user
from usage.models import UsageRecord, UsageSummary
from usage.services import summary_persist_hours, usage_record, usage_record_many
from usage.store import get_store
from usage.windows import summary_key

pytestmark = pytest.mark.django_db

HOUR_10 = datetime(2026, 11, 25, 10, tzinfo=UTC)


def live(user, hour) -> dict:
    key = summary_key(user.id, hour)
    return get_store().get_many([key])[key]


@time_machine.travel(datetime(2026, 11, 25, 10, 30, tzinfo=UTC), tick=False)
def test_a_batch_writes_every_row_and_counts_each_user_once_per_call(unique_owner):
    other = unique_user()
    calls = [
        call_for(unique_owner, usage=Usage(input_tokens=100, output_tokens=10)),
        call_for(unique_owner, usage=Usage(input_tokens=200, output_tokens=20)),
        call_for(other, usage=Usage(input_tokens=5, output_tokens=1)),
    ]
    assert usage_record_many(calls=calls) == 3
    assert UsageRecord.objects.count() == 3
    mine = live(unique_owner, HOUR_10)
    assert (mine["requests"], mine["input_tokens"], mine["output_tokens"]) == (2, 300, 30)
    assert live(other, HOUR_10)["requests"] == 1


@time_machine.travel(datetime(2026, 11, 25, 10, 30, tzinfo=UTC), tick=False)
def test_a_batch_with_an_already_recorded_call_counts_it_once(unique_owner):
    first = call_for(unique_owner)
    usage_record(call=first)
    assert usage_record_many(calls=[first, call_for(unique_owner)]) == 1
    assert UsageRecord.objects.count() == 2
    assert live(unique_owner, HOUR_10)["requests"] == 2


def test_a_late_call_in_a_batch_goes_to_its_persisted_hour(unique_owner):
    started = datetime(2026, 11, 25, 10, 59, 30, tzinfo=UTC)
    with time_machine.travel(datetime(2026, 11, 25, 10, 59, 40, tzinfo=UTC), tick=False):
        usage_record(call=call_for(unique_owner, started_at=started))
    with time_machine.travel(datetime(2026, 11, 25, 11, 6, tzinfo=UTC), tick=False):
        summary_persist_hours()
        assert usage_record_many(calls=[call_for(unique_owner, started_at=started)]) == 1
    assert live(unique_owner, HOUR_10) == {}  # persisted: the live key is gone and stays gone
    hourly = UsageSummary.objects.get(user=unique_owner, period="hourly", period_start=HOUR_10)
    assert hourly.requests == 2


@time_machine.travel(datetime(2026, 11, 25, 10, 30, tzinfo=UTC), tick=False)
def test_a_call_the_proxy_priced_is_recorded_at_that_price_not_priced_again(unique_owner):
    import dataclasses

    usage = Usage(input_tokens=1000, output_tokens=100)
    unpriced = call_for(unique_owner, usage=usage)
    priced = dataclasses.replace(call_for(unique_owner, usage=usage), cost_micros=4242, priced=True)
    priced_unknown = dataclasses.replace(call_for(unique_owner, usage=usage), priced=True)
    assert usage_record_many(calls=[unpriced, priced, priced_unknown]) == 3
    costs = dict(UsageRecord.objects.values_list("call_id", "cost_micros"))
    assert costs[priced.call_id] == 4242
    assert costs[priced_unknown.call_id] is None  # the proxy found no price: none recorded
    assert costs[unpriced.call_id] != 4242  # priced here, from the table


@time_machine.travel(datetime(2026, 11, 25, 10, 30, tzinfo=UTC), tick=False)
def test_a_batch_row_reads_back_as_the_call_it_records(unique_owner):
    # The batch is written with its own INSERT, not the ORM's: every column must come back
    # as the call had it (a UUID, an aware time, NULLs, text that is hostile to SQL).
    started = datetime(2026, 11, 25, 10, 29, 58, 123456, tzinfo=UTC)
    call = call_for(
        unique_owner,
        usage=Usage(input_tokens=7, output_tokens=3, cache_write_1h_tokens=2, cache_read_tokens=9),
        started_at=started,
        streaming=True,
        error_type="x'); DROP TABLE usage_usagerecord; --",
        ttfb_ms=12,
        session_id="sess-<b>é</b>",
        upstream_status=200,
    )
    assert usage_record_many(calls=[call]) == 1
    row = UsageRecord.objects.get(call_id=call.call_id)
    assert (row.user_id, row.started_at, row.streaming, row.error_type) == (
        unique_owner.id,
        started,
        True,
        call.error_type,
    )
    assert (row.input_tokens, row.output_tokens, row.cache_write_1h_tokens) == (7, 3, 2)
    assert (row.cache_read_tokens, row.ttfb_ms, row.session_id) == (9, 12, "sess-<b>é</b>")
    assert (row.api_key_id, row.team_id, row.model_id) == (None, None, call.model_id)
    assert row.created_at is not None
    assert row.cost_micros is not None


@time_machine.travel(datetime(2026, 11, 25, 10, 30, tzinfo=UTC), tick=False)
def test_a_batch_larger_than_one_insert_is_all_or_nothing_before_its_fallback(
    unique_owner, monkeypatch
):
    import usage.services

    monkeypatch.setattr(usage.services, "INSERT_CHUNK", 2)
    calls = [call_for(unique_owner) for _ in range(5)]
    assert usage_record_many(calls=calls) == 5
    assert UsageRecord.objects.count() == 5
    # A recorded call in the last statement undoes the earlier statements too: then each
    # call is written on its own, and the recorded one is not written twice.
    again = [call_for(unique_owner) for _ in range(4)] + [calls[0]]
    assert usage_record_many(calls=again) == 4
    assert UsageRecord.objects.count() == 9
    assert live(unique_owner, HOUR_10)["requests"] == 9
