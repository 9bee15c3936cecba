"""Authentication as Bedrock does it: SigV4 against the configured pair, or a bearer key."""

import json

import httpx
import pytest

from tests.fixtures.emulator import bedrock_client, start_emulator

MODEL = "us.anthropic.claude-sonnet-4-6"
BODY = json.dumps(
    {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hello"}],
    }
)


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch):
    for name in ("AWS_BEARER_TOKEN_BEDROCK", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_sigv4_with_the_example_pair_is_accepted(emulator):
    client = bedrock_client(emulator.url)

    response = client.invoke_model(modelId=MODEL, body=BODY)

    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_sigv4_is_verified_for_an_arn_with_a_slash(emulator):
    client = bedrock_client(emulator.url)
    arn = "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-opus-4-7"

    response = client.invoke_model(modelId=arn, body=BODY)

    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_sigv4_with_a_wrong_secret_is_rejected(emulator):
    client = bedrock_client(emulator.url, secret_key="not-the-secret")

    with pytest.raises(client.exceptions.ClientError) as caught:
        client.invoke_model(modelId=MODEL, body=BODY)

    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidSignatureException"
    assert error["Message"].startswith(
        "The request signature we calculated does not match the signature you provided."
    )
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_sigv4_with_an_unknown_access_key_is_rejected(emulator):
    client = bedrock_client(emulator.url, access_key="AKIAUNKNOWN")

    with pytest.raises(client.exceptions.ClientError) as caught:
        client.invoke_model(modelId=MODEL, body=BODY)

    assert caught.value.response["Error"] == {
        "Code": "UnrecognizedClientException",
        "Message": "The security token included in the request is invalid.",
    }


def test_body_tampered_after_signing_is_rejected(emulator):
    client = bedrock_client(emulator.url)

    def tamper(request, **_):
        request.body = request.body.replace(b"hello", b"jello")

    client.meta.events.register("before-send.bedrock-runtime.InvokeModel", tamper)

    with pytest.raises(client.exceptions.ClientError) as caught:
        client.invoke_model(modelId=MODEL, body=BODY)

    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_request_without_credentials_is_rejected(emulator):
    response = httpx.post(f"{emulator.url}/model/{MODEL}/invoke", content=BODY)

    assert response.status_code == 403
    assert response.headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException:")


def test_bearer_token_from_the_environment_over_tls(emulator_tls, monkeypatch):
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-test")
    client = bedrock_client(
        emulator_tls.url, verify=emulator_tls.ca_path, access_key=None, secret_key=None
    )
    sent = {}
    client.meta.events.register(
        "before-send.bedrock-runtime.*",
        lambda request, **_: sent.update(authorization=request.headers["Authorization"]),
    )

    reply = json.loads(client.invoke_model(modelId=MODEL, body=BODY)["body"].read())

    assert sent["authorization"] in ("Bearer bedrock-api-key-test", b"Bearer bedrock-api-key-test")
    assert reply["type"] == "message"


def test_configured_api_keys_restrict_bearer_tokens(monkeypatch):
    with start_emulator("--api-keys", "good-key,other-key", tls=True) as server:
        monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "good-key")
        good = bedrock_client(server.url, verify=server.ca_path, access_key=None, secret_key=None)
        assert good.invoke_model(modelId=MODEL, body=BODY)["body"].read()

        monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bad-key")
        bad = bedrock_client(server.url, verify=server.ca_path, access_key=None, secret_key=None)
        with pytest.raises(bad.exceptions.AccessDeniedException):
            bad.invoke_model(modelId=MODEL, body=BODY)
        # Idle TLS connections would otherwise hold the server's graceful shutdown.
        good.close()
        bad.close()


def test_custom_credentials_replace_the_example_pair():
    with start_emulator("--access-key", "AKIACUSTOM", "--secret-key", "s3cret") as server:
        custom = bedrock_client(server.url, access_key="AKIACUSTOM", secret_key="s3cret")
        example = bedrock_client(server.url)

        assert custom.invoke_model(modelId=MODEL, body=BODY)["body"].read()
        with pytest.raises(example.exceptions.ClientError) as caught:
            example.invoke_model(modelId=MODEL, body=BODY)
        assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"
