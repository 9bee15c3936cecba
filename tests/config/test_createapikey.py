"""`manage.py createapikey EMAIL [--name NAME] [--admin]`: the key alone on stdout."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.authentication import authenticate_credentials
from accounts.models import ApiKey, User

pytestmark = pytest.mark.django_db


def create(*args: str) -> str:
    out = StringIO()
    call_command("createapikey", *args, stdout=out)
    return out.getvalue()


def test_it_creates_the_user_and_prints_only_a_working_key():
    output = create("New.Person@Example.com", "--name", "laptop")
    key = output.strip()
    assert output == key + "\n"
    assert key.startswith("SSOK_")
    assert len(key) == 37
    user = User.objects.get(email="new.person@example.com")
    assert not user.is_admin
    api_key = ApiKey.objects.get(user=user)
    assert api_key.name == "laptop"
    assert key not in (api_key.key_hash, api_key.prefix)
    assert authenticate_credentials({"X-API-Key": key}).user_id == user.pk


def test_admin_flag_and_a_second_key_for_the_same_user():
    first = create("boss@example.com", "--admin").strip()
    second = create("boss@example.com").strip()
    assert first != second
    user = User.objects.get(email="boss@example.com")
    assert user.is_admin
    assert user.api_keys.count() == 2


@pytest.mark.parametrize("email", ["not-an-email", "<script>@x", "a@b'; DROP TABLE x; --"])
def test_it_refuses_what_is_not_an_email(email):
    with pytest.raises(CommandError, match="not an e-mail address"):
        create(email)
    assert not User.objects.exists()
