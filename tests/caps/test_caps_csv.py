"""Issue #15: caps as CSV in Django admin — import with a preview, errors by row and all or
nothing; export of every active cap with its use, which imports back unchanged."""

import csv
import io
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from accounts.models import Team
from accounts.services import user_team_set
from caps.models import TeamCapConfig, UserCapConfig
from caps.reservations import cap_reserve, cap_settle
from caps.services import cap_create, team_cap_set
from costs.money import Usage
from tests.fixtures.calls import SONNET

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
IMPORT_URL = "/admin/caps/usercapconfig/import-csv/"
EXPORT_URL = "/admin/caps/usercapconfig/export-csv/"
HEADER = "subject,period,max_requests,max_tokens,max_cost_usd\n"


@pytest.fixture(autouse=True)
def _at_now():
    with time_machine.travel(NOW, tick=False):
        yield


def upload(client, text: str):
    """The preview of a file, as the import page shows it."""
    file = SimpleUploadedFile("caps.csv", text.encode(), content_type="text/csv")
    return client.post(IMPORT_URL, {"file": file})


def apply(client, text: str):
    return client.post(IMPORT_URL, {"apply": "1", "csv_text": text}, follow=True)


def caps_now() -> list[tuple]:
    users = UserCapConfig.objects.values_list(
        "user__email", "cap_type", "set_by", "max_requests", "max_tokens", "max_cost_cents"
    )
    teams = TeamCapConfig.objects.values_list(
        "team__name", "cap_type", "max_requests", "max_tokens", "max_cost_cents"
    )
    return sorted(users) + sorted(teams)


@pytest.fixture
def alice_bob_and_platform(make_user):
    """(alice@example.com, bob@example.com, the team "Platform")."""
    alice = make_user("alice@example.com")
    bob = make_user("bob@example.com")
    platform = Team.objects.create(name="Platform")
    return alice, bob, platform


def test_the_caps_list_links_the_import_and_the_export(admin_client):
    page = admin_client.get("/admin/caps/usercapconfig/")
    assert IMPORT_URL.encode() in page.content
    assert EXPORT_URL.encode() in page.content
    assert b"Download caps CSV" in page.content


def test_preview_lists_what_a_good_file_will_change(admin_client, alice_bob_and_platform):
    _alice, bob, _platform = alice_bob_and_platform
    cap_create(user_id=bob.pk, cap_type="daily", set_by="admin", max_requests=5)
    text = HEADER + (
        "alice@example.com,daily,1000,,50.00\n"
        "BOB@example.com,daily,5,,\n"
        "team:Platform,monthly,,,1000\n"
    )
    page = upload(admin_client, text)
    html = page.content.decode()
    assert 'id="import-errors"' not in html
    assert "2 to create, 0 to update, 1 unchanged" in html
    assert "$1,000.00" in html
    assert not TeamCapConfig.objects.exists()  # a preview applies nothing
    assert UserCapConfig.objects.count() == 1


def test_a_good_file_applies_user_and_team_rows(admin_client, alice_bob_and_platform):
    alice, bob, _platform = alice_bob_and_platform
    cap_create(user_id=bob.pk, cap_type="daily", set_by="admin", max_requests=5)
    own = cap_create(user_id=bob.pk, cap_type="daily", set_by="user", max_requests=3)
    text = HEADER + (
        "alice@example.com,daily,1000,,50.00\n"
        "alice@example.com,session,,,$5\n"
        "bob@example.com,daily,,2000000,\n"
        "team:Platform,monthly,,,1000\n"
    )
    response = apply(admin_client, text)
    assert b"3 created, 1 updated, 0 unchanged, 0 ignored" in response.content
    assert caps_now() == [
        ("alice@example.com", "daily", "admin", 1000, None, 5000),
        ("alice@example.com", "session", "admin", None, None, 500),
        ("bob@example.com", "daily", "admin", None, 2_000_000, None),
        ("bob@example.com", "daily", "user", 3, None, None),
        ("Platform", "monthly", None, None, 100_000),
    ]
    own.refresh_from_db()
    assert own.max_requests == 3
    # Through the services: new administrator and team caps start after the grace period.
    assert UserCapConfig.objects.get(user=alice, cap_type="daily").enforce_from > NOW
    assert TeamCapConfig.objects.get().enforce_from > NOW


BAD_ROWS = [
    ("nobody@example.com,daily,10,,", "subject", "no user with the e-mail"),
    ("team:Nobody,daily,10,,", "subject", "no team named"),
    ("alice@example.com,weekly,10,,", "period", "unknown period"),
    ("team:Platform,session,,,5", "period", "a team cap cannot be per session"),
    ("alice@example.com,daily,-5,,", "max_requests", "greater than zero"),
    ("alice@example.com,hourly,0,,", "max_requests", "greater than zero"),
    ("alice@example.com,monthly,,,0", "max_cost_usd", "greater than zero"),
    ("bob@example.com,daily,,1.5,", "max_tokens", "whole number"),
    ("bob@example.com,hourly,,,abc", "max_cost_usd", "amount in dollars"),
    ("bob@example.com,monthly,,,NaN", "max_cost_usd", "amount in dollars"),
    ("bob@example.com,session,,,0.001", "max_cost_usd", "whole cents"),
    ("bob@example.com,session,5,,", "", "a session cap limits cost only"),
    ("team:Platform,daily,,,", "", "set at least one limit"),
    ("team:Platform,hourly,99999999999,,", "max_requests", "at most"),
]


def test_preview_shows_every_bad_row_and_applies_nothing(admin_client, alice_bob_and_platform):
    good = "alice@example.com,daily,1000,,50.00"
    text = HEADER + "\n".join([good, *(row for row, _, _ in BAD_ROWS), good]) + "\n"
    page = upload(admin_client, text)
    html = page.content.decode()
    assert "Nothing was applied" in html
    errors = html[
        html.index('id="import-errors"') : html.index("</table>", html.index("import-errors"))
    ]
    for line, (_, column, message) in enumerate(BAD_ROWS, start=3):
        assert f"<tr><td>{line}</td><td>{column}</td><td>" in errors
        assert message in errors, message
    assert "same subject and period as row 2" in errors  # the good row, twice
    assert 'name="apply"' not in html
    assert caps_now() == []


def test_applying_a_file_with_one_bad_row_changes_nothing(admin_client, alice_bob_and_platform):
    _alice, bob, _platform = alice_bob_and_platform
    cap_create(user_id=bob.pk, cap_type="daily", set_by="admin", max_requests=5)
    before = caps_now()
    text = HEADER + (
        "alice@example.com,daily,1000,,50.00\n"
        "bob@example.com,daily,7,,\n"
        "team:Platform,monthly,,,1000\n"
        "carol@example.com,daily,10,,\n"
    )
    response = apply(admin_client, text)
    assert b"Nothing was applied" in response.content
    assert b"no user with the e-mail &#x27;carol@example.com&#x27;" in response.content
    assert caps_now() == before


def test_hostile_cells_are_shown_escaped_and_refused(admin_client, alice_bob_and_platform):
    text = HEADER + (
        '"<script>alert(1)</script>",daily,10,,\n'
        '"x@example.com\'; DROP TABLE user_cap_configs; --",daily,10,,\n'
        '"team:<img src=x onerror=alert(1)>",daily,10,,\n'
        'alice@example.com,"<b>daily</b>",10,,\n'
        'alice@example.com,monthly,"=HYPERLINK(""http://evil"")",,\n'
    )
    html = upload(admin_client, text).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<b>daily</b>" not in html
    assert html.count("<tr><td>") == 5  # every row refused
    assert "user_cap_configs" in connection.introspection.table_names()
    assert caps_now() == []


def test_a_file_that_is_not_a_caps_file_is_refused(admin_client, alice_bob_and_platform):
    assert b"the header must start with" in upload(admin_client, "email,limit\na,1\n").content
    assert b"file has no data rows" in upload(admin_client, HEADER).content
    binary = SimpleUploadedFile("caps.csv", b"\xff\xfe\x00bad", content_type="text/csv")
    assert b"not UTF-8" in admin_client.post(IMPORT_URL, {"file": binary}).content


def export(client) -> list[dict]:
    response = client.get(EXPORT_URL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_export_lists_every_active_cap_with_its_use(
    admin_client, alice_bob_and_platform, default_prices
):
    alice, bob, platform = alice_bob_and_platform
    user_team_set(user=alice, team=platform)
    cap_create(user_id=alice.pk, cap_type="daily", set_by="admin", max_requests=10,
               max_cost_cents=5000)  # fmt: skip
    cap_create(user_id=alice.pk, cap_type="daily", set_by="user", max_tokens=10_000_000)
    cap_create(user_id=bob.pk, cap_type="session", set_by="admin", max_cost_cents=500)
    cap_create(user_id=bob.pk, cap_type="hourly", set_by="admin", max_requests=1,
               is_active=False)  # fmt: skip
    team_cap_set(team_id=platform.pk, cap_type="monthly", max_cost_cents=100_000)
    usage = Usage(input_tokens=1_000_000)  # $3.00
    reservation = cap_reserve(
        user_id=alice.pk, model_id=SONNET, estimate=usage, team_id=platform.pk
    )
    cap_settle(reservation=reservation, actual=usage)
    rows = export(admin_client)
    by_key = {(r["subject"], r["period"], r["set_by"]): r for r in rows}
    admin_daily = by_key[("alice@example.com", "daily", "admin")]
    assert admin_daily["max_requests"] == "10"
    assert admin_daily["max_cost_usd"] == "50.00"
    assert admin_daily["requests_used"] == "1"
    assert admin_daily["tokens_used"] == "1000000"
    assert admin_daily["cost_used_usd"] == "3.0000"
    assert admin_daily["percent_used"] == "10.0"
    assert by_key[("alice@example.com", "daily", "user")]["percent_used"] == "10.0"
    team = by_key[("team:Platform", "monthly", "team")]
    assert (team["max_cost_usd"], team["cost_used_usd"], team["percent_used"]) == (
        "1000.00", "3.0000", "0.3",
    )  # fmt: skip
    assert by_key[("bob@example.com", "session", "admin")]["requests_used"] == ""
    assert ("bob@example.com", "hourly", "admin") not in by_key  # inactive


def test_an_exported_file_imports_back_unchanged_and_edits_apply(
    admin_client, alice_bob_and_platform, make_user
):
    alice, _bob, platform = alice_bob_and_platform
    odd = make_user("-dash@example.com")  # a spreadsheet would take this cell for a formula
    cap_create(user_id=alice.pk, cap_type="daily", set_by="admin", max_requests=10,
               max_cost_cents=5050)  # fmt: skip
    cap_create(user_id=alice.pk, cap_type="daily", set_by="user", max_tokens=10_000)
    cap_create(user_id=odd.pk, cap_type="monthly", set_by="admin", max_cost_cents=123_456)
    team_cap_set(team_id=platform.pk, cap_type="daily", max_requests=500, max_tokens=9_000_000)
    before = caps_now()
    text = admin_client.get(EXPORT_URL).content.decode()
    assert "'-dash@example.com" in text
    preview = upload(admin_client, text).content.decode()
    assert "0 to create, 0 to update, 3 unchanged" in preview
    result = apply(admin_client, text)
    assert b"0 created, 0 updated, 3 unchanged" in result.content
    assert caps_now() == before

    edited = text.replace("team:Platform,daily,500,", "team:Platform,daily,400,")
    assert edited != text
    result = apply(admin_client, edited)
    assert b"0 created, 1 updated, 2 unchanged" in result.content
    assert TeamCapConfig.objects.get().max_requests == 400
