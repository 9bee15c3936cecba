"""Model identifiers: base ids, inference profiles and ARNs resolve to a known base id."""

import pytest

from emulator.models import KNOWN_MODELS, resolve_model


@pytest.mark.parametrize(
    ("model_id", "base"),
    [
        ("anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("us.anthropic.claude-opus-5-5", "anthropic.claude-opus-5-5"),
        ("eu.anthropic.claude-sonnet-4-6", "anthropic.claude-sonnet-4-6"),
        ("apac.anthropic.claude-opus-4-6-v1", "anthropic.claude-opus-4-6-v1"),
        ("jp.anthropic.claude-haiku-5-5", "anthropic.claude-haiku-5-5"),
        ("au.anthropic.claude-sonnet-5", "anthropic.claude-sonnet-5"),
        ("global.anthropic.claude-opus-4-8", "anthropic.claude-opus-4-8"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-opus-5",
            "anthropic.claude-opus-5",
        ),
        (
            "arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-sonnet-4-20250514-v1:0",
            "anthropic.claude-sonnet-4-20250514-v1:0",
        ),
    ],
)
def test_known_ids_resolve_to_their_base_id(model_id, base):
    assert resolve_model(model_id) == base


@pytest.mark.parametrize(
    "model_id",
    [
        "anthropic.claude-opus-9",
        "xx.anthropic.claude-opus-5-5",
        "claude-opus-5-5",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/anthropic.claude-opus-5",
        "arn:aws:bedrock:us-east-1::foundation-model/us.anthropic.claude-opus-5",
        "",
    ],
)
def test_unknown_ids_do_not_resolve(model_id):
    assert resolve_model(model_id) is None


def test_every_current_model_is_known():
    for model in (
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "anthropic.claude-opus-4-5-20251101-v1:0",
        "anthropic.claude-opus-4-1-20250805-v1:0",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "anthropic.claude-opus-4-7",
        "anthropic.claude-sonnet-5-5",
    ):
        assert model in KNOWN_MODELS
