"""Membership check for `auth.allowed_github_orgs` (GitHub's /user/orgs with the user's token)."""

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
