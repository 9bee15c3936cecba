import pytest

from caps.errors import CapExceeded
from caps.reservations import cap_reserve, cap_settle
from caps.services import cap_create
from costs.money import Usage
from tests.fixtures.calls import SONNET

pytestmark = pytest.mark.django_db


def test_request_cap_blocks_the_call_past_the_limit(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=2)
    est = Usage(input_tokens=10, output_tokens=10)
    for _ in range(2):
        r = cap_reserve(user_id=user.pk, model_id=SONNET, estimate=est, store=any_store)
        cap_settle(reservation=r, actual=est)
    with pytest.raises(CapExceeded) as info:
        cap_reserve(user_id=user.pk, model_id=SONNET, estimate=est, store=any_store)
    assert info.value.message.startswith("Daily usage cap exceeded: 2/2 requests. Resets at ")
