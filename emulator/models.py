"""The Anthropic model ids Bedrock serves, and how a request's model identifier resolves.

A caller may name a model by its base id (``anthropic.claude-sonnet-4-6``), by a cross-region
inference profile (``us.anthropic.claude-sonnet-4-6``), or by the ARN of either. Everything
resolves to the base id; anything else is "The provided model identifier is invalid."
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = [
    "KNOWN_MODELS",
    "ON_DEMAND_MODELS",
    "PROFILE_PREFIXES",
    "anthropic_model_name",
    "is_profile",
    "rejects_custom_temperature",
    "resolve_model",
]

KNOWN_MODELS: frozenset[str] = frozenset(
    {
        # Older models keep dated, versioned ids.
        "anthropic.claude-3-haiku-20240307-v1:0",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "anthropic.claude-opus-4-20250514-v1:0",
        "anthropic.claude-opus-4-1-20250805-v1:0",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        "anthropic.claude-opus-4-5-20251101-v1:0",
        # From Opus 4.6 on: no date; only Opus 4.6 keeps a "-v1".
        "anthropic.claude-opus-4-6-v1",
        "anthropic.claude-sonnet-4-6",
        "anthropic.claude-opus-4-7",
        "anthropic.claude-opus-4-8",
        "anthropic.claude-opus-5",
        "anthropic.claude-sonnet-5",
        "anthropic.claude-opus-5-5",
        "anthropic.claude-sonnet-5-5",
        "anthropic.claude-haiku-5-5",
        "anthropic.claude-fable-5",
        "anthropic.claude-fable-5-1",
        "anthropic.claude-fable-5-2",
        "anthropic.claude-mythos-5",
        # One model of another family: its answers are not Anthropic-shaped.
        "amazon.nova-micro-v1:0",
    }
)

# Served on demand by base id too; every later model only through inference profiles.
ON_DEMAND_MODELS: frozenset[str] = frozenset(
    {
        "anthropic.claude-3-haiku-20240307-v1:0",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "amazon.nova-micro-v1:0",
    }
)

PROFILE_PREFIXES: tuple[str, ...] = ("us", "eu", "apac", "jp", "au", "global", "us-gov", "ca")

_ARN = re.compile(
    r"^arn:aws[a-z-]*:bedrock:[a-z0-9-]*:(?P<account>\d{12})?:"
    r"(?P<kind>inference-profile|foundation-model)/(?P<id>[^/]+)$"
)
_VERSION_SUFFIX = re.compile(r"-v\d+(:\d+)?$")
_GENERATION = re.compile(r"^anthropic\.claude-[a-z]+-(\d+)")


def _split_profile(model_id: str) -> tuple[str | None, str]:
    prefix, dot, rest = model_id.partition(".")
    if dot and prefix in PROFILE_PREFIXES:
        return prefix, rest
    return None, model_id


@lru_cache(maxsize=4096)
def resolve_model(model_id: str) -> str | None:
    """The base model id behind a model id, inference profile or ARN; None if unknown."""
    match = _ARN.match(model_id)
    if match:
        prefix, base = _split_profile(match["id"])
        # A foundation-model ARN names a base model; an inference-profile ARN names a profile.
        if (match["kind"] == "foundation-model") != (prefix is None):
            return None
    else:
        prefix, base = _split_profile(model_id)
    return base if base in KNOWN_MODELS else None


def is_profile(model_id: str) -> bool:
    """Whether the identifier names a cross-region inference profile (or its ARN)."""
    match = _ARN.match(model_id)
    if match:
        return match["kind"] == "inference-profile"
    return _split_profile(model_id)[0] is not None


def anthropic_model_name(base_id: str) -> str:
    """The name Anthropic uses in response bodies: ``claude-sonnet-4-5-20250929``."""
    return _VERSION_SUFFIX.sub("", base_id.removeprefix("anthropic."))


def rejects_custom_temperature(base_id: str) -> bool:
    """The 5.x generation thinks by default and accepts no temperature but 1."""
    match = _GENERATION.match(base_id)
    return match is not None and int(match[1]) >= 5
