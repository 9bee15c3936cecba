"""Injected Bedrock errors arrive as botocore's own exception classes."""

import json

import httpx
import pytest

from tests.fixtures.emulator import bedrock_client

MODEL = "us.anthropic.claude-sonnet-4-6"
BODY = json.dumps(
    {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("ValidationException", 400),
        ("ServiceQuotaExceededException", 400),
        ("AccessDeniedException", 403),
        ("ResourceNotFoundException", 404),
        ("ModelTimeoutException", 408),
        ("ModelErrorException", 424),
        ("ThrottlingException", 429),
        ("ModelNotReadyException", 429),
        ("InternalServerException", 500),
        ("ServiceUnavailableException", 503),
    ],
)
def test_injected_error_is_botocores_exception_class(emulator, name, status):
    client = bedrock_client(emulator.url, headers={"x-emulator-error": name})
    expected = getattr(client.exceptions, name)

    with pytest.raises(expected) as caught:
        client.invoke_model(modelId=MODEL, body=BODY)

    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert caught.value.response["Error"]["Message"]


def test_injected_error_applies_to_streams_before_any_byte(emulator):
    client = bedrock_client(emulator.url, headers={"x-emulator-error": "throttling"})

    with pytest.raises(client.exceptions.ThrottlingException):
        client.invoke_model_with_response_stream(modelId=MODEL, body=BODY)


def test_error_wire_format_is_bedrocks(emulator):
    response = httpx.post(
        f"{emulator.url}/model/{MODEL}/invoke",
        content=BODY,
        headers={"authorization": "Bearer any", "x-emulator-error": "ThrottlingException"},
    )

    assert response.status_code == 429
    assert response.headers["x-amzn-errortype"] == (
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    )
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"message": "Too many requests, please wait before trying again."}
    assert response.headers["x-amzn-requestid"]


def test_error_rate_one_always_fails_and_zero_never(emulator):
    failing = bedrock_client(emulator.url, headers={"x-emulator-error-rate": "1"})
    passing = bedrock_client(emulator.url, headers={"x-emulator-error-rate": "0"})

    with pytest.raises(failing.exceptions.ThrottlingException):
        failing.invoke_model(modelId=MODEL, body=BODY)
    assert passing.invoke_model(modelId=MODEL, body=BODY)["body"].read()


def test_server_flags_set_default_knobs():
    from tests.fixtures.emulator import start_emulator

    with start_emulator("--error", "ServiceUnavailableException", "--reply-tokens", "2") as server:
        failing = bedrock_client(server.url)
        with pytest.raises(failing.exceptions.ServiceUnavailableException):
            failing.invoke_model(modelId=MODEL, body=BODY)

        # A header wins over the flag ("none" switches the server's error off).
        client = bedrock_client(server.url, headers={"x-emulator-error": "none"})
        reply = json.loads(client.invoke_model(modelId=MODEL, body=BODY)["body"].read())
        assert reply["usage"]["output_tokens"] == 2


def test_unknown_path_is_an_unknown_operation(emulator):
    response = httpx.post(f"{emulator.url}/model/{MODEL}/frobnicate", content=b"{}")

    assert response.status_code == 404
    assert response.headers["x-amzn-errortype"].startswith("UnknownOperationException:")


def test_ping_answers_ok(emulator):
    response = httpx.get(f"{emulator.url}/ping")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_invalid_knob_header_is_a_validation_error(emulator):
    client = bedrock_client(emulator.url, headers={"x-emulator-ttfb-ms": "soon"})

    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.invoke_model(modelId=MODEL, body=BODY)

    assert "x-emulator-ttfb-ms" in caught.value.response["Error"]["Message"]


def test_require_profiles_rejects_base_ids_of_profile_only_models():
    from tests.fixtures.emulator import start_emulator

    with start_emulator("--require-profiles") as server:
        client = bedrock_client(server.url)
        with pytest.raises(client.exceptions.ValidationException) as caught:
            client.invoke_model(modelId="anthropic.claude-sonnet-4-6", body=BODY)
        profile = client.invoke_model(modelId="us.anthropic.claude-sonnet-4-6", body=BODY)
        on_demand = client.invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0", body=BODY)

    assert "inference profile" in caught.value.response["Error"]["Message"]
    assert profile["body"].read()
    assert on_demand["body"].read()
