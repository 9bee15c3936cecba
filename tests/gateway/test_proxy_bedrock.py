"""/bedrock with the real clients: boto3 (bearer over TLS, and botocore parsing the relayed
event stream) and the anthropic SDK's AnthropicBedrock client."""

import json

import anthropic
import boto3
import pytest
from botocore.config import Config

from tests.fixtures.waiting import wait_for
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
BODY = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "Tell me about event streams"}],
}


def boto_client(stack_tls, monkeypatch, key: str):
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", key)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"{stack_tls.gateway.url}/bedrock",
        verify=stack_tls.gateway.ca_path,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30),
    )


def record_for(request_id: str) -> UsageRecord | None:
    return UsageRecord.objects.filter(request_id=request_id).first()


def test_boto3_invoke_with_bearer_key_is_relayed_and_recorded(stack_tls, monkeypatch, alice_key):
    client = boto_client(stack_tls, monkeypatch, alice_key)
    response = client.invoke_model(modelId=MODEL, body=json.dumps(BODY))
    payload = json.loads(response["body"].read())
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert payload["type"] == "message"
    assert payload["usage"]["output_tokens"] > 0
    assert headers["x-amzn-bedrock-input-token-count"] == str(payload["usage"]["input_tokens"])
    record = wait_for(lambda: record_for(headers["x-amzn-requestid"]))
    assert record is not None
    assert record.route == "bedrock.invoke"
    assert record.input_tokens == payload["usage"]["input_tokens"]
    assert record.output_tokens == payload["usage"]["output_tokens"]
    assert record.cost_micros > 0
    assert record.client_family == "Boto3"


def test_boto3_stream_is_parsed_by_botocore_and_recorded_once(stack_tls, monkeypatch, alice_key):
    client = boto_client(stack_tls, monkeypatch, alice_key)
    response = client.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps(BODY))
    events = [json.loads(e["chunk"]["bytes"]) for e in response["body"]]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    request_id = response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    record = wait_for(lambda: record_for(request_id))
    assert record.streaming is True
    assert record.input_tokens == metrics["inputTokenCount"]
    assert record.output_tokens == metrics["outputTokenCount"]
    assert UsageRecord.objects.filter(request_id=request_id).count() == 1


def test_arn_model_ids_reach_the_upstream(stack_tls, monkeypatch, alice_key):
    client = boto_client(stack_tls, monkeypatch, alice_key)
    arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{MODEL}"
    response = client.invoke_model(modelId=arn, body=json.dumps(BODY))
    assert json.loads(response["body"].read())["type"] == "message"


def test_converse_usage_is_recorded(stack_tls, monkeypatch, alice_key):
    client = boto_client(stack_tls, monkeypatch, alice_key)
    response = client.converse(
        modelId=MODEL,
        messages=[{"role": "user", "content": [{"text": "Hello there"}]}],
        inferenceConfig={"maxTokens": 40},
    )
    request_id = response["ResponseMetadata"]["RequestId"]
    record = wait_for(lambda: record_for(request_id))
    assert record.route == "bedrock.converse"
    assert record.input_tokens == response["usage"]["inputTokens"]
    assert record.output_tokens == response["usage"]["outputTokens"]


def test_converse_stream_usage_is_recorded(stack_tls, monkeypatch, alice_key):
    client = boto_client(stack_tls, monkeypatch, alice_key)
    response = client.converse_stream(
        modelId=MODEL,
        messages=[{"role": "user", "content": [{"text": "Hello there"}]}],
        inferenceConfig={"maxTokens": 40},
    )
    events = list(response["stream"])
    usage = next(e["metadata"]["usage"] for e in events if "metadata" in e)
    request_id = response["ResponseMetadata"]["RequestId"]
    record = wait_for(lambda: record_for(request_id))
    assert record.route == "bedrock.converse_stream"
    assert record.output_tokens == usage["outputTokens"]


def test_a_wrong_key_is_an_unrecognized_client_for_boto3(stack_tls, monkeypatch, alice_key):
    client = boto_client(stack_tls, monkeypatch, "SSOK_" + "x" * 32)
    with pytest.raises(client.exceptions.ClientError) as excinfo:
        client.invoke_model(modelId=MODEL, body=json.dumps(BODY))
    assert excinfo.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401


def test_an_upstream_validation_error_keeps_its_botocore_class(stack_tls, monkeypatch, alice_key):
    client = boto_client(stack_tls, monkeypatch, alice_key)
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model(modelId="anthropic.claude-nonexistent-9", body=json.dumps(BODY))


def test_anthropic_bedrock_client_plain_and_stream(stack, alice_key):
    client = anthropic.AnthropicBedrock(
        base_url=f"{stack.gateway.url}/bedrock",
        api_key=alice_key,
        aws_region="us-east-1",
        max_retries=0,
    )
    message = client.messages.create(
        model=MODEL, max_tokens=30, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.usage.output_tokens > 0
    with client.messages.stream(
        model=MODEL, max_tokens=30, messages=[{"role": "user", "content": "Hi again"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.usage.output_tokens > 0
    records = wait_for(lambda: UsageRecord.objects.count() >= 2 and UsageRecord.objects.all())
    assert sorted(r.route for r in records) == ["bedrock.invoke", "bedrock.invoke_stream"]
