"""Device sign-in (RFC 8628) with Django's test client: the endpoints, their errors, approval
through a signed-in session, device tokens on /api, revocation, refresh rotation, sign-out."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.test import Client

from accounts import device_views
from accounts.device import DEVICE_CODE_GRANT, USER_CODE_ALPHABET
from accounts.models import AuditEvent, Device, DeviceAuthorization, DeviceToken
from accounts.services import api_key_create, token_pair_create, user_deactivate
from config import clock
from tests.fixtures.device_flow import api_get, ask, decide, poll, signed_in_device
from tests.fixtures.personas import make_user

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_django_cache")]

FORM = "application/x-www-form-urlencoded"
USER_CODE = re.compile(rf"^[{USER_CODE_ALPHABET}]{{4}}-[{USER_CODE_ALPHABET}]{{4}}$")


def refresh(client: Client, refresh_token: str, client_id: str = "gateway-token"):
    return client.post(
        "/oauth/token",
        {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id},
    )


def assert_error(response, error: str, status: int = 400) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    assert set(body) == {"error", "error_description"}
    assert response["Cache-Control"] == "no-store"


# --- The device authorization endpoint ------------------------------------------------------


def test_device_code_answer_follows_rfc_8628(client):
    body = ask(client, device_name="laptop")
    assert set(body) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    assert USER_CODE.match(body["user_code"]), body["user_code"]
    assert body["verification_uri"] == "http://testserver/device"
    assert body["verification_uri_complete"] == (
        f"http://testserver/device?user_code={body['user_code']}"
    )
    assert body["expires_in"] == 600
    assert body["interval"] == 5
    assert len(body["device_code"]) >= 40
    # Only hashes are stored.
    row = DeviceAuthorization.objects.get()
    assert body["device_code"] not in json.dumps(
        list(DeviceAuthorization.objects.values()), default=str
    )
    assert body["user_code"].replace("-", "") not in row.user_code_hash
    assert row.device_name == "laptop"
    assert row.client_id == "gateway-token"


def test_verification_uri_uses_the_public_url(client, monkeypatch):
    monkeypatch.setattr(settings.GATEWAY.server, "public_url", "https://gw.example.com")
    body = ask(client)
    assert body["verification_uri"] == "https://gw.example.com/device"


def test_device_code_takes_json_too(client):
    response = client.post(
        "/oauth/device/code",
        {"client_id": "x", "device_name": "box"},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert DeviceAuthorization.objects.get().device_name == "box"


def test_device_code_needs_a_client_id(client):
    assert_error(client.post("/oauth/device/code", {}), "invalid_request")
    assert_error(
        client.post("/oauth/device/code", {}, content_type="application/json"), "invalid_request"
    )


def test_device_code_refuses_other_bodies(client):
    response = client.post("/oauth/device/code", "client_id=x", content_type="text/plain")
    assert_error(response, "invalid_request")
    response = client.post("/oauth/device/code", "[1]", content_type="application/json")
    assert_error(response, "invalid_request")
    response = client.post("/oauth/device/code", "{", content_type="application/json")
    assert_error(response, "invalid_request")


def test_device_code_is_post_only(client):
    assert client.get("/oauth/device/code").status_code == 405
    assert client.get("/oauth/token").status_code == 405


def test_device_codes_are_rate_limited_per_address(client):
    for _ in range(device_views.DEVICE_CODES_PER_MINUTE):
        ask(client)
    response = client.post("/oauth/device/code", {"client_id": "x"})
    assert response.status_code == 429
    assert response.json()["error"] == "slow_down"
    assert int(response["Retry-After"]) >= 1
    # Another address is not affected.
    other = Client(REMOTE_ADDR="10.0.0.9")
    assert other.post("/oauth/device/code", {"client_id": "x"}).status_code == 200


# --- The token endpoint: RFC 8628 §3.5 and RFC 6749 §5.2 errors ----------------------------


def test_pending_until_approved(client):
    asked = ask(client)
    assert_error(poll(client, asked["device_code"]), "authorization_pending")


def test_polling_faster_than_the_interval_is_slow_down(client):
    start = clock.now()
    with time_machine.travel(start, tick=False) as traveller:
        asked = ask(client)
        assert_error(poll(client, asked["device_code"]), "authorization_pending")
        traveller.shift(2)
        assert_error(poll(client, asked["device_code"]), "slow_down")
        # The interval grew by 5 s (to 10): 6 s later is still too fast.
        traveller.shift(6)
        assert_error(poll(client, asked["device_code"]), "slow_down")
        assert DeviceAuthorization.objects.get().interval == 15
        traveller.shift(16)
        assert_error(poll(client, asked["device_code"]), "authorization_pending")


def test_denied_is_access_denied(client, owner):
    asked = ask(client)
    response = decide(owner, asked["user_code"], "deny")
    assert response.status_code == 200
    assert b"Request denied" in response.content
    assert_error(poll(client, asked["device_code"]), "access_denied")
    assert AuditEvent.objects.filter(action="device.deny", actor=owner).exists()
    assert not Device.objects.exists()


def test_an_expired_code_is_expired_token(client, owner):
    asked = ask(client)
    with time_machine.travel(clock.now() + timedelta(seconds=601)):
        assert_error(poll(client, asked["device_code"]), "expired_token")
        # Nor can it be approved any more.
        assert decide(owner, asked["user_code"]).status_code == 404


def test_an_unknown_code_is_invalid_grant(client):
    assert_error(poll(client, "not-a-code"), "invalid_grant")


def test_a_used_code_is_invalid_grant(client, owner):
    asked = ask(client)
    decide(owner, asked["user_code"])
    assert poll(client, asked["device_code"]).status_code == 200
    assert_error(poll(client, asked["device_code"]), "invalid_grant")


def test_a_code_is_bound_to_its_client_id(client, owner):
    asked = ask(client)
    decide(owner, asked["user_code"])
    assert_error(poll(client, asked["device_code"], client_id="someone-else"), "invalid_grant")
    assert poll(client, asked["device_code"]).status_code == 200


def test_token_request_errors(client):
    assert_error(client.post("/oauth/token", {"client_id": "x"}), "invalid_request")
    assert_error(
        client.post("/oauth/token", {"grant_type": DEVICE_CODE_GRANT, "device_code": "x"}),
        "invalid_request",
    )
    assert_error(
        client.post("/oauth/token", {"grant_type": DEVICE_CODE_GRANT, "client_id": "x"}),
        "invalid_request",
    )
    assert_error(
        client.post("/oauth/token", {"grant_type": "password", "client_id": "x"}),
        "unsupported_grant_type",
    )
    assert_error(
        client.post("/oauth/token", {"grant_type": "refresh_token", "client_id": "x"}),
        "invalid_request",
    )


def test_token_endpoint_takes_json_too(client, owner):
    asked = ask(client)
    decide(owner, asked["user_code"])
    response = client.post(
        "/oauth/token",
        {
            "grant_type": DEVICE_CODE_GRANT,
            "device_code": asked["device_code"],
            "client_id": "gateway-token",
        },
        content_type="application/json",
    )
    assert response.status_code == 200


# --- Approval through a signed-in session -------------------------------------------------


def test_anonymous_visitors_sign_in_first_and_come_back(client):
    asked = ask(client)
    response = Client().get(f"/device?user_code={asked['user_code']}")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/device%3Fuser_code%3D")


def test_the_page_shows_the_requesting_device_then_approval_gives_tokens(owner):
    device_client = Client(REMOTE_ADDR="192.0.2.7", HTTP_USER_AGENT="gateway-token/1 (python)")
    asked = ask(device_client, device_name="Olive's laptop", client_id="claude-helper")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    # Typed by hand: lower case, no dash.
    typed = asked["user_code"].replace("-", "").lower()
    page = browser.get(f"/device?user_code={typed}")
    assert page.status_code == 200
    text = page.content.decode()
    for shown in ("Olive&#x27;s laptop", "claude-helper", "192.0.2.7", "gateway-token/1 (python)"):
        assert shown in text
    assert "Approve" in text
    assert "Deny" in text
    # Without the CSRF token: refused, nothing decided.
    assert browser.post("/device", {"user_code": typed, "decision": "approve"}).status_code == 403
    assert_error(
        poll(device_client, asked["device_code"], "claude-helper"), "authorization_pending"
    )
    csrf = browser.cookies["csrftoken"].value
    done = browser.post(
        "/device", {"user_code": typed, "decision": "approve", "csrfmiddlewaretoken": csrf}
    )
    assert done.status_code == 200
    assert b"Device approved" in done.content
    with time_machine.travel(clock.now() + timedelta(seconds=6)):
        response = poll(device_client, asked["device_code"], "claude-helper")
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.GATEWAY.auth.device_token_lifetime_seconds
    assert body["access_token"].startswith("SSOD_")
    assert body["refresh_token"].startswith("SSODR_")
    device = Device.objects.get()
    assert (device.user, device.name, device.client_id) == (
        owner,
        "Olive's laptop",
        "claude-helper",
    )
    assert (device.ip, device.user_agent) == ("192.0.2.7", "gateway-token/1 (python)")
    # Hashes only.
    assert body["access_token"] not in json.dumps(list(DeviceToken.objects.values()), default=str)
    assert body["refresh_token"] != device.refresh_token_hash
    assert AuditEvent.objects.filter(action="device.approve", actor=owner).exists()
    assert AuditEvent.objects.filter(action="device.create", actor=owner).exists()


def test_a_wrong_code_says_so_and_guessing_is_limited(owner):
    browser = Client()
    browser.force_login(owner)
    response = browser.get("/device?user_code=BBBB-BBBB")
    assert response.status_code == 404
    assert b"No device is waiting for this code" in response.content
    for _ in range(device_views.USER_CODE_FAILURES):
        browser.get("/device?user_code=BBBB-BBBB")
    asked = ask(Client())
    assert browser.get(f"/device?user_code={asked['user_code']}").status_code == 429


def test_a_code_is_decided_once(client, owner, teammate):
    asked = ask(client)
    decide(owner, asked["user_code"])
    assert decide(teammate, asked["user_code"], "deny").status_code == 404
    assert poll(client, asked["device_code"]).status_code == 200
    assert Device.objects.get().user == owner


def test_the_code_entry_form(owner):
    browser = Client()
    browser.force_login(owner)
    page = browser.get("/device")
    assert page.status_code == 200
    assert b'name="user_code"' in page.content


# --- Device tokens as credentials ---------------------------------------------------------


@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
def test_device_tokens_work_on_the_api(owner, header):
    tokens = signed_in_device(owner)
    response = api_get(tokens["access_token"], header)
    assert response.status_code == 200, response.content
    assert Device.objects.get().last_used_at is not None


def test_device_tokens_cannot_create_credentials(owner):
    tokens = signed_in_device(owner)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {tokens['access_token']}"}
    client = Client()
    response = client.post("/api/keys", {"name": "x"}, content_type="application/json", **auth)
    assert response.status_code == 403
    assert client.post("/api/token", **auth).status_code == 403
    assert not owner.api_keys.exists()


def test_a_refresh_token_is_not_a_credential(owner):
    tokens = signed_in_device(owner)
    assert api_get(tokens["refresh_token"]).status_code == 401
    assert api_get(tokens["access_token"] + "x").status_code == 401


def test_an_access_token_expires(owner):
    tokens = signed_in_device(owner)
    lifetime = settings.GATEWAY.auth.device_token_lifetime_seconds
    with time_machine.travel(clock.now() + timedelta(seconds=lifetime + 1)):
        assert api_get(tokens["access_token"]).status_code == 401


def test_revoking_a_device_stops_its_tokens_at_once(owner):
    tokens = signed_in_device(owner)
    assert api_get(tokens["access_token"]).status_code == 200  # cached now
    device = Device.objects.get()
    browser = Client()
    browser.force_login(owner)
    confirm = browser.get(f"/devices/{device.pk}/revoke")
    assert confirm.status_code == 200
    assert device.name.encode() in confirm.content
    assert api_get(tokens["access_token"]).status_code == 200  # GET changes nothing
    response = browser.post(f"/devices/{device.pk}/revoke")
    assert response.status_code == 302
    assert response["Location"] == "/keys"
    assert api_get(tokens["access_token"]).status_code == 401
    assert_error(refresh(Client(), tokens["refresh_token"]), "invalid_grant")
    device.refresh_from_db()
    assert device.status == "revoked"
    event = AuditEvent.objects.get(action="device.revoke")
    assert event.actor == owner
    assert event.target == f"device:{device.pk}"


def test_another_users_device_cannot_be_revoked(owner, stranger):
    signed_in_device(owner)
    browser = Client()
    browser.force_login(stranger)
    device = Device.objects.get()
    assert browser.post(f"/devices/{device.pk}/revoke").status_code == 404
    assert Device.objects.get().revoked_at is None


def test_deactivating_the_user_stops_device_tokens_at_once(owner):
    tokens = signed_in_device(owner)
    assert api_get(tokens["access_token"]).status_code == 200  # cached now
    user_deactivate(user=owner)
    assert api_get(tokens["access_token"]).status_code == 401
    assert_error(refresh(Client(), tokens["refresh_token"]), "invalid_grant")


# --- Refresh -------------------------------------------------------------------------------


def test_refresh_rotates_and_the_used_refresh_token_fails(owner):
    tokens = signed_in_device(owner)
    client = Client()
    response = refresh(client, tokens["refresh_token"])
    assert response.status_code == 200, response.content
    fresh = response.json()
    assert fresh["token_type"] == "Bearer"
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert fresh["access_token"] != tokens["access_token"]
    assert api_get(fresh["access_token"]).status_code == 200
    assert_error(refresh(client, tokens["refresh_token"]), "invalid_grant")
    # The new one rotates in turn.
    assert refresh(client, fresh["refresh_token"]).status_code == 200
    assert Device.objects.count() == 1


def test_refresh_is_bound_to_the_client_id(owner):
    tokens = signed_in_device(owner)
    assert_error(refresh(Client(), tokens["refresh_token"], "other"), "invalid_grant")
    assert refresh(Client(), tokens["refresh_token"]).status_code == 200


def test_a_refresh_token_expires(owner):
    tokens = signed_in_device(owner)
    days = settings.GATEWAY.auth.device_refresh_lifetime_days
    with time_machine.travel(clock.now() + timedelta(days=days, seconds=1)):
        assert_error(refresh(Client(), tokens["refresh_token"]), "invalid_grant")


def test_an_unknown_refresh_token_is_invalid_grant(client):
    assert_error(refresh(client, "SSODR_nope"), "invalid_grant")
    assert_error(refresh(client, "garbage"), "invalid_grant")


# --- Signing out ----------------------------------------------------------------------------


def test_signing_out_of_the_dashboard_leaves_devices_working(owner):
    tokens = signed_in_device(owner)
    browser = Client()
    browser.force_login(owner)
    assert browser.post("/accounts/logout/").status_code == 302
    assert api_get(tokens["access_token"]).status_code == 200
    assert refresh(Client(), tokens["refresh_token"]).status_code == 200


def test_logout_everywhere_ends_sessions_tokens_and_devices_but_not_keys(owner):
    tokens = signed_in_device(owner)
    jwt = token_pair_create(user=owner)
    key = api_key_create(user=owner, name="ci").raw
    other_session = Client()
    other_session.force_login(owner)
    assert other_session.get("/keys").status_code == 200
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    page = browser.get("/keys")
    assert b'action="/accounts/logout-everywhere"' in page.content
    # CSRF applies.
    assert browser.post("/accounts/logout-everywhere").status_code == 403
    assert api_get(tokens["access_token"]).status_code == 200
    response = browser.post(
        "/accounts/logout-everywhere", {"csrfmiddlewaretoken": browser.cookies["csrftoken"].value}
    )
    assert response.status_code == 302
    assert browser.get("/keys").status_code == 302  # this session is over
    assert other_session.get("/keys").status_code == 302  # and every other
    assert api_get(tokens["access_token"]).status_code == 401
    assert_error(refresh(Client(), tokens["refresh_token"]), "invalid_grant")
    assert api_get(jwt["access"]).status_code == 401
    assert api_get(key).status_code == 200
    assert AuditEvent.objects.filter(action="logout.everywhere", actor=owner).exists()
    # Signing in again works.
    owner.refresh_from_db()
    again = Client()
    again.force_login(owner)
    assert again.get("/keys").status_code == 200


def test_logout_everywhere_needs_a_post(owner):
    browser = Client()
    browser.force_login(owner)
    assert browser.get("/accounts/logout-everywhere").status_code == 405


# --- The keys page ---------------------------------------------------------------------------


def test_keys_page_lists_devices_and_the_helper_settings(owner, stranger):
    signed_in_device(owner, device_name="Olive's laptop")
    signed_in_device(stranger, device_name="not mine")
    browser = Client()
    browser.force_login(owner)
    text = browser.get("/keys").content.decode()
    assert "Olive&#x27;s laptop" in text
    assert "not mine" not in text
    device = Device.objects.get(user=owner)
    assert f"/devices/{device.pk}/revoke" in text
    assert "python3 ~/.claude/gateway_token.py --url http://testserver" in text
    assert "&quot;ANTHROPIC_BASE_URL&quot;: &quot;http://testserver/anthropic&quot;" in text
    assert "CLAUDE_CODE_API_KEY_HELPER_TTL_MS" in text
    assert 'href="/tools/gateway_token.py"' in text


def test_keys_page_settings_use_the_public_url(owner, monkeypatch):
    monkeypatch.setattr(settings.GATEWAY.server, "public_url", "https://gw.example.com")
    browser = Client()
    browser.force_login(owner)
    text = browser.get("/keys").content.decode()
    assert "--url https://gw.example.com" in text
    assert "https://gw.example.com/anthropic" in text


def test_the_helper_scripts_are_downloadable(client):
    response = client.get("/tools/gateway_token.py")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == (settings.BASE_DIR / "tools" / "gateway_token.py").read_bytes()
    assert "attachment" in response["Content-Disposition"]
    assert client.get("/tools/settings.py").status_code == 404
    assert client.get("/tools/..%2Fmanage.py").status_code == 404


def test_make_user_helper_is_sso_like():
    # The personas fixture makes users without a usable password; a session still ends when
    # the session generation moves (not the password).
    user = make_user("someone@example.com")
    before = user.get_session_auth_hash()
    user.session_generation = 1
    assert user.get_session_auth_hash() != before


# --- Administration ---------------------------------------------------------------------------


def test_an_admin_revokes_a_device_in_admin_and_its_tokens_stop(admin_client):
    user = make_user("laptop-owner@example.com")
    tokens = signed_in_device(user)
    assert api_get(tokens["access_token"]).status_code == 200
    device = Device.objects.get(user=user)
    listing = admin_client.get("/admin/accounts/device/")
    assert "laptop-owner@example.com" in listing.content.decode()
    done = admin_client.post(
        "/admin/accounts/device/",
        {"action": "revoke", "_selected_action": [device.pk]},
    )
    assert done.status_code == 302
    device.refresh_from_db()
    assert device.revoked_at is not None
    assert api_get(tokens["access_token"]).status_code == 401
    assert AuditEvent.objects.filter(action="device.revoke").exists()


def test_the_daily_job_purges_expired_device_sign_ins(client):
    from accounts.tasks import purge_device_authorizations

    ask(client)
    assert DeviceAuthorization.objects.count() == 1
    assert purge_device_authorizations() == 0  # not expired yet
    with time_machine.travel(clock.now() + timedelta(days=2)):
        assert purge_device_authorizations() == 1
    assert not DeviceAuthorization.objects.exists()
