"""Group sync (#15): the provider's `groups` claim decides the team through `auth.team_groups`,
at every OpenID Connect sign-in against the real local provider."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import AuditEvent, Team, User
from accounts.services import user_team_set
from tests.fixtures.oidc import sign_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("oidc_settings")]

TEAM_GROUPS = {"eng": "Engineering", "ops": "Ops"}


@pytest.fixture
def team_groups(settings):
    def change(mapping: dict[str, str]) -> None:
        auth = settings.GATEWAY.auth.model_copy(update={"team_groups": mapping})
        settings.GATEWAY = settings.GATEWAY.model_copy(update={"auth": auth})

    change(TEAM_GROUPS)
    return change


def sign_in_with_groups(idp, email: str, groups: list[str] | None) -> User:
    idp.set_groups(email, groups)
    assert sign_in(Client(), email=email).status_code == 302
    return User.objects.select_related("team").get(email=email)


def test_the_first_mapped_group_decides_the_team_at_first_sign_in(oidc_provider, team_groups):
    user = sign_in_with_groups(oidc_provider, "dev@example.com", ["x", "eng", "ops"])
    assert user.team.name == "Engineering"
    assert Team.objects.filter(name="Engineering").count() == 1
    assert AuditEvent.objects.filter(action="user.team", target=f"user:{user.pk}").exists()


def test_changing_groups_at_the_provider_moves_the_user_at_the_next_sign_in(
    oidc_provider, team_groups
):
    sign_in_with_groups(oidc_provider, "mover@example.com", ["eng"])
    user = sign_in_with_groups(oidc_provider, "mover@example.com", ["ops", "eng"])
    assert user.team.name == "Ops"


def test_the_move_reaches_cached_credentials(oidc_provider, team_groups):
    from accounts.services import api_key_authenticate, api_key_create

    user = sign_in_with_groups(oidc_provider, "cached@example.com", ["eng"])
    key = api_key_create(user=user, name="laptop")
    assert api_key_authenticate(raw=key.raw).team_id == user.team_id  # now cached
    user = sign_in_with_groups(oidc_provider, "cached@example.com", ["ops"])
    assert api_key_authenticate(raw=key.raw).team_id == Team.objects.get(name="Ops").pk


def test_leaving_every_mapped_group_leaves_a_team_the_provider_manages(oidc_provider, team_groups):
    sign_in_with_groups(oidc_provider, "left@example.com", ["eng"])
    user = sign_in_with_groups(oidc_provider, "left@example.com", ["x"])
    assert user.team is None


def test_a_team_set_by_hand_stays_when_no_group_is_mapped(oidc_provider, team_groups):
    user = sign_in_with_groups(oidc_provider, "placed@example.com", ["x"])
    user_team_set(user=user, team=Team.objects.create(name="Research"))
    user = sign_in_with_groups(oidc_provider, "placed@example.com", ["x", "y"])
    assert user.team.name == "Research"


def test_a_mapped_group_overrides_a_team_set_by_hand(oidc_provider, team_groups):
    user = sign_in_with_groups(oidc_provider, "override@example.com", [])
    user_team_set(user=user, team=Team.objects.create(name="Research"))
    user = sign_in_with_groups(oidc_provider, "override@example.com", ["ops"])
    assert user.team.name == "Ops"


def test_no_groups_claim_changes_nothing(oidc_provider, team_groups):
    sign_in_with_groups(oidc_provider, "claimless@example.com", ["eng"])
    user = sign_in_with_groups(oidc_provider, "claimless@example.com", None)
    assert user.team.name == "Engineering"


def test_without_team_groups_the_claim_is_ignored(oidc_provider, team_groups):
    team_groups({})
    user = sign_in_with_groups(oidc_provider, "unmapped@example.com", ["eng"])
    assert user.team is None
    assert not Team.objects.exists()


def test_the_groups_claim_is_in_the_id_token_and_userinfo(oidc_provider, team_groups):
    user = sign_in_with_groups(oidc_provider, "claims@example.com", ["eng", "ops"])
    data = user.socialaccount_set.get().extra_data
    assert data["userinfo"]["groups"] == ["eng", "ops"]
    assert data["id_token"]["groups"] == ["eng", "ops"]
