"""`auth.allowed_github_orgs`: the membership check against a GitHub-shaped API on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from accounts import github_orgs


@pytest.fixture
def github_api():
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != "Bearer good-token":
                self.send_response(401)
                self.end_headers()
                return
            if self.path.startswith("/user/teams"):
                teams = [{"slug": "platform", "organization": {"login": "Acme"}}]
                body = json.dumps(teams).encode()
            else:
                body = json.dumps([{"login": "Acme"}, {"login": "other-org"}]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_member_of_an_allowed_org_passes(github_api):
    url, seen = github_api
    assert github_orgs.member_of_any(token="good-token", orgs=["acme"], base_url=url)
    assert seen == ["Bearer good-token"]


def test_member_of_no_allowed_org_is_refused(github_api):
    url, _ = github_api
    assert not github_orgs.member_of_any(token="good-token", orgs=["initech"], base_url=url)


def test_api_failure_refuses(github_api):
    url, _ = github_api
    assert not github_orgs.member_of_any(token="bad-token", orgs=["acme"], base_url=url)
    assert not github_orgs.member_of_any(token="x", orgs=["acme"], base_url="http://127.0.0.1:9")


def test_github_teams_and_orgs_are_groups_teams_first(github_api):
    url, _ = github_api
    assert github_orgs.groups(token="good-token", base_url=url) == [
        "acme/platform",
        "acme",
        "other-org",
    ]
    assert github_orgs.groups(token="bad-token", base_url=url) is None  # then nothing changes


@pytest.mark.django_db
def test_a_github_team_decides_the_team_over_its_org(github_api, settings):
    from accounts.services import user_get_or_create, user_team_from_groups

    url, _ = github_api
    settings.GATEWAY.auth.team_groups = {"Acme/Platform": "Platform", "acme": "Acme at large"}
    try:
        user = user_get_or_create(email="octo@example.com")
        groups = github_orgs.groups(token="good-token", base_url=url)
        assert user_team_from_groups(user=user, groups=groups) is True
        user.refresh_from_db()
        assert user.team.name == "Platform"
    finally:
        settings.GATEWAY.auth.team_groups = {}
