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


def test_static_files_are_served_by_the_async_middleware(client):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"/*")


def test_a_missing_static_file_is_a_json_404(client):
    response = client.get("/static/nothing-here.css")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
