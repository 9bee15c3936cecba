"""Clients of the shared emulator (`tests.fixtures.emulator`), one per test module."""

import pytest
from anthropic import AnthropicBedrock

from emulator.config import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from tests.fixtures.emulator import bedrock_client


@pytest.fixture(scope="module")
def anthropic_client(emulator) -> AnthropicBedrock:
    """The anthropic SDK's AnthropicBedrock client, signing with the emulator's credentials."""
    return AnthropicBedrock(
        base_url=emulator.url,
        aws_access_key=DEFAULT_ACCESS_KEY,
        aws_secret_key=DEFAULT_SECRET_KEY,
        aws_region="us-east-1",
        max_retries=0,
    )


@pytest.fixture(scope="module")
def bedrock_runtime(emulator):
    """A boto3 ``bedrock-runtime`` client with retries off (`bedrock_client`)."""
    return bedrock_client(emulator.url)
