"""Django admin's password sign-in (/admin/login/): audited, and throttled per user and per
address in the Django cache."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent, User

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fresh_counts():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def root(db) -> User:
    return User.objects.create_superuser("root", "root@example.com", PASSWORD)


def attempt(client, username: str, password: str, address: str = "127.0.0.1"):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password},
        REMOTE_ADDR=address,
    )


def test_success_and_failure_are_audited(root):
    assert attempt(Client(), "root", "wrong").status_code == 200
    failure = AuditEvent.objects.get(action="login.failure", target="root")
    assert failure.detail == {"reason": "bad password", "method": "admin password"}
    assert failure.ip == "127.0.0.1"
    response = attempt(Client(), "root", PASSWORD)
    assert response.status_code == 302
    success = AuditEvent.objects.get(action="login.success", actor=root)
    assert success.detail == {"method": "admin password"}


def test_five_failures_refuse_even_the_right_password_for_the_window(root):
    for _ in range(5):
        assert attempt(Client(), "root", "wrong", address="198.51.100.1").status_code == 200
    refused = attempt(Client(), "root", PASSWORD, address="198.51.100.1")
    assert refused.status_code == 200  # the form again, with the message
    assert "Too many failed sign-in attempts" in refused.content.decode()
    assert "_auth_user_id" not in refused.wsgi_request.session
    assert AuditEvent.objects.filter(
        action="login.failure", detail__reason="too many failed attempts"
    ).exists()
    # Per user: another address gets no further for this account...
    assert attempt(Client(), "root", PASSWORD, address="198.51.100.2").status_code == 200
    # ... and the window ends.
    with time_machine.travel(timezone.now() + timedelta(minutes=16)):
        assert attempt(Client(), "root", PASSWORD, address="198.51.100.2").status_code == 302


def test_failures_from_one_address_block_it_for_every_user(root):
    for n in range(5):
        attempt(Client(), f"nobody{n}", "wrong", address="203.0.113.9")
    assert attempt(Client(), "root", PASSWORD, address="203.0.113.9").status_code == 200
    assert attempt(Client(), "root", PASSWORD, address="203.0.113.10").status_code == 302
