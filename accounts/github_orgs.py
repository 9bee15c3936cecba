"""GitHub organisations with the user's token: the membership check for
`auth.allowed_github_orgs` (/user/orgs) and the groups for `auth.team_groups` (orgs as "org",
teams as "org/team-slug", from /user/orgs and /user/teams)."""

from __future__ import annotations

import logging

import requests
from django.conf import settings

logger = logging.getLogger(__name__)


def api_url() -> str:
    """GitHub's REST API, or a GitHub Enterprise Server's (``providers.github.server_url``)."""
    web_url = settings.SOCIALACCOUNT_PROVIDERS.get("github", {}).get("GITHUB_URL")
    return f"{web_url.rstrip('/')}/api/v3" if web_url else "https://api.github.com"


def member_of_any(*, token: str, orgs: list[str], base_url: str | None = None) -> bool:
    """Whether the token's user belongs to one of `orgs`; False when GitHub cannot tell us."""
    wanted = {org.lower() for org in orgs}
    url = f"{base_url or api_url()}/user/orgs?per_page=100"
    try:
        response = requests.get(
            url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
            timeout=10,
        )
        response.raise_for_status()
        logins = {str(org.get("login", "")).lower() for org in response.json()}
    except (requests.RequestException, ValueError, AttributeError) as exc:
        logger.warning("GitHub org check failed: %s", type(exc).__name__)
        return False
    return bool(wanted & logins)


def _get(url: str, token: str) -> list:
    response = requests.get(
        url,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
        timeout=10,
    )
    response.raise_for_status()
    items = response.json()
    if not isinstance(items, list):
        raise ValueError("not a list")
    return items


def groups(*, token: str, base_url: str | None = None) -> list[str] | None:
    """The user's GitHub teams ("org/team-slug") then orgs ("org"), lowercase, teams first so
    that a mapped team wins over its org in `auth.team_groups`; None when GitHub cannot tell
    us (the user's team then stays as it is)."""
    base = base_url or api_url()
    try:
        teams = _get(f"{base}/user/teams?per_page=100", token)
        orgs = _get(f"{base}/user/orgs?per_page=100", token)
        found = [
            f"{team['organization']['login']}/{team['slug']}".lower()
            for team in teams
            if isinstance(team, dict)
        ]
        found += [str(org.get("login", "")).lower() for org in orgs if isinstance(org, dict)]
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        logger.warning("GitHub groups lookup failed: %s", type(exc).__name__)
        return None
    return [group for group in found if group]
