"""Issue #14: the CSV export neutralises full-width and whitespace-led formula signs too."""

from __future__ import annotations

import csv
import io

import pytest

from accounts.services import api_key_create

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous"),
]

DANGEROUS = [
    "\uff1dHYPERLINK(1)",  # full-width =
    "\uff0bcmd",  # full-width +
    "\uff0d2+3",  # full-width -
    "\uff20SUM(1)",  # full-width @
    "\tcmd",
    "\rcmd",
    "  =1+1",  # spaces before the sign
]


@pytest.mark.parametrize("session_id", DANGEROUS)
def test_csv_export_neutralises_full_width_and_control_led_formulas(
    owner, owner_client, record_claude_code_call, session_id
):
    key = api_key_create(user=owner, name=session_id).api_key
    record_claude_code_call(owner, api_key_id=key.pk, session_id=session_id)
    response = owner_client.get("/usage/export.csv")
    assert response.status_code == 200
    header, *rows = list(csv.reader(io.StringIO(b"".join(response).decode())))
    cell = dict(zip(header, rows[0], strict=True))
    assert cell["session_id"] == "'" + session_id
    assert cell["api_key_name"] == "'" + session_id


def test_csv_export_leaves_plain_cells_alone(owner, owner_client, record_claude_code_call):
    record_claude_code_call(owner, session_id="plain-session")
    response = owner_client.get("/usage/export.csv")
    header, *rows = list(csv.reader(io.StringIO(b"".join(response).decode())))
    assert dict(zip(header, rows[0], strict=True))["session_id"] == "plain-session"
