"""The gateway's own SigV4 signer signs exactly as botocore's SigV4Auth does."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway import sigv4
from gateway.upstream import model_url

AT = datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC)
KEY, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def botocore_signed(method, url, body, headers, token=None) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    with mock.patch("botocore.auth.get_current_datetime", return_value=AT.replace(tzinfo=None)):
        SigV4Auth(Credentials(KEY, SECRET, token), "bedrock", "us-east-1").add_auth(request)
    return dict(request.headers.items())


CASES = [
    pytest.param(
        "https://bedrock-runtime.us-east-1.amazonaws.com"
        + "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke",
        b'{"max_tokens":32}',
        {"Content-Type": "application/json", "Accept": "application/json"},
        None,
        id="profile id with a colon",
    ),
    pytest.param(
        "http://127.0.0.1:8100/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012"
        "%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-6/invoke-with-response-stream",
        b"{}",
        {
            "Content-Type": "application/json",
            "Accept": "application/vnd.amazon.eventstream",
            "Accept-Encoding": "identity",
            "X-Amzn-Bedrock-Trace": "  ENABLED   twice ",
            "User-Agent": "not signed",
        },
        "session-token",
        id="ARN, a port, a session token, spaces, an unsigned header",
    ),
    pytest.param(
        "https://bedrock-runtime.us-west-2.amazonaws.com:443/model/x/count-tokens?b=2&a=1",
        b"",
        {},
        None,
        id="default port, a query, no body",
    ),
]


def ours(url, body, headers, token=None) -> dict[str, str]:
    return sigv4.sign(
        "POST",
        url,
        body,
        headers,
        access_key=KEY,
        secret_key=SECRET,
        token=token,
        region="us-east-1",
        service="bedrock",
        now=AT,
    )


@pytest.mark.parametrize(("url", "body", "headers", "token"), CASES)
def test_signs_as_botocore(url, body, headers, token):
    signed = ours(url, body, headers, token)
    assert signed == botocore_signed("POST", url, body, headers, token)
    assert signed["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY}/20270304/")


def test_a_changed_body_changes_the_signature():
    url = model_url("anthropic.claude-sonnet-4-6", "invoke")
    signed = [ours(url, body, {})["Authorization"] for body in (b"{}", b"{ }")]
    assert signed[0] != signed[1]
