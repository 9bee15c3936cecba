import pytest

from gateway.anthropic import AnthropicError, bedrock_error_to_anthropic, error_body


def test_error_body_is_anthropics_envelope():
    assert error_body("rate_limit_error", "Slow down") == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Slow down"},
    }


def test_anthropic_error_carries_status_and_body():
    error = AnthropicError(413, "request_too_large", "Request exceeds the maximum size")
    assert error.status == 413
    assert error.body == error_body("request_too_large", "Request exceeds the maximum size")
    assert str(error) == "Request exceeds the maximum size"


@pytest.mark.parametrize(
    ("status", "error_type", "expected_status", "expected_type"),
    [
        (400, "ValidationException", 400, "invalid_request_error"),
        (403, "AccessDeniedException", 403, "permission_error"),
        (404, "ResourceNotFoundException", 404, "not_found_error"),
        (429, "ThrottlingException", 429, "rate_limit_error"),
        (429, "ModelNotReadyException", 429, "rate_limit_error"),
        (400, "ServiceQuotaExceededException", 429, "rate_limit_error"),
        (408, "ModelTimeoutException", 504, "api_error"),
        (424, "ModelErrorException", 502, "api_error"),
        (500, "InternalServerException", 502, "api_error"),
        (503, "ServiceUnavailableException", 503, "overloaded_error"),
        (403, "UnrecognizedClientException", 502, "api_error"),
        (403, "InvalidSignatureException", 502, "api_error"),
        (403, "ExpiredTokenException", 502, "api_error"),
    ],
)
def test_bedrock_error_types_map_to_anthropic_statuses(
    status, error_type, expected_status, expected_type
):
    new_status, body = bedrock_error_to_anthropic(status, error_type, "upstream said so")
    assert new_status == expected_status
    assert body == error_body(expected_type, "upstream said so")


@pytest.mark.parametrize(
    "error_type",
    [
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "com.amazon.bedrock#ThrottlingException",
        "aws#ThrottlingException:http://x/",
    ],
)
def test_namespaced_error_types_are_recognised(error_type):
    status, body = bedrock_error_to_anthropic(400, error_type, "m")
    assert (status, body["error"]["type"]) == (429, "rate_limit_error")


@pytest.mark.parametrize(
    ("status", "expected_status", "expected_type"),
    [
        (400, 400, "invalid_request_error"),
        (401, 502, "api_error"),
        (403, 403, "permission_error"),
        (404, 404, "not_found_error"),
        (408, 504, "api_error"),
        (409, 409, "invalid_request_error"),
        (413, 413, "request_too_large"),
        (429, 429, "rate_limit_error"),
        (500, 502, "api_error"),
        (502, 502, "api_error"),
        (503, 503, "overloaded_error"),
        (504, 504, "api_error"),
    ],
)
def test_unknown_error_types_map_by_status(status, expected_status, expected_type):
    for error_type in (None, "", "SomethingNewException"):
        new_status, body = bedrock_error_to_anthropic(status, error_type, "msg")
        assert (new_status, body["error"]["type"]) == (expected_status, expected_type)


def test_an_empty_upstream_message_gets_one():
    _, body = bedrock_error_to_anthropic(500, "InternalServerException", "")
    assert body["error"]["message"] == "Upstream error (500)."
