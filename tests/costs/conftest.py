import pytest
from rest_framework.test import APIClient

from tests.fixtures.process_memory import forget_price_table


@pytest.fixture(autouse=True)
def _fresh_price_table():
    """Each test starts with no table in memory: an earlier test's rolled-back rows are gone."""
    forget_price_table()
    yield
    forget_price_table()


@pytest.fixture
def admin_api(admin_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


@pytest.fixture
def member(django_user_model):
    return django_user_model.objects.create_user(
        username="member", email="member@example.com", password="x-unused-x"
    )


@pytest.fixture
def member_api(member) -> APIClient:
    client = APIClient()
    client.force_authenticate(member)
    return client
