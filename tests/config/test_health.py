import pytest

pytestmark = pytest.mark.django_db


def test_health_answers_ok_without_auth(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_db_check_reports_latency(client):
    body = client.get("/health?check=db").json()
    assert body["components"]["db"]["status"] == "up"
    assert body["components"]["db"]["latency_ms"] >= 0
