"""Django admin pages of usage: readable by superusers, never editable."""

import pytest
from django.test import Client

from tests.fixtures.personas import unique_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(db):
    user = unique_user(admin=True)
    user.is_superuser = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


def test_usage_records_and_summaries_are_listed_and_filterable(
    superuser_client, unique_owner, record
):
    row = record(unique_owner)
    page = superuser_client.get("/admin/usage/usagerecord/?client_family=Anthropic/Python")
    assert page.status_code == 200
    assert row.model_id in page.content.decode()
    assert superuser_client.get("/admin/usage/usagesummary/").status_code == 200
    detail = superuser_client.get(f"/admin/usage/usagerecord/{row.pk}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()


def test_records_cannot_be_added_or_deleted_in_admin(superuser_client, unique_owner, record):
    row = record(unique_owner)
    assert superuser_client.get("/admin/usage/usagerecord/add/").status_code == 403
    assert superuser_client.post(f"/admin/usage/usagerecord/{row.pk}/delete/").status_code == 403
