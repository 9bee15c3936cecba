"""The Converse API on top of the Messages engine: request translation and responses.

A Converse request is translated to the Anthropic body Bedrock would hand the model, so both
APIs count tokens, cache and reply identically.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import BedrockError
from .messages import Block, Completion

__all__ = ["converse_body", "converse_events", "to_anthropic"]

DEFAULT_MAX_TOKENS = 4096


def _cache_control(point: Any) -> dict[str, Any]:
    control: dict[str, Any] = {"type": "ephemeral"}
    if isinstance(point, dict) and point.get("ttl") == "1h":
        control["ttl"] = "1h"
    return control


def _text_of_result(item: Any) -> dict[str, Any]:
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return {"type": "text", "text": item["text"]}
    if isinstance(item, dict) and "json" in item:
        return {"type": "text", "text": json.dumps(item["json"], separators=(",", ":"))}
    if isinstance(item, dict) and "image" in item:
        return {"type": "image", "source": item["image"]}
    return {"type": "text", "text": json.dumps(item, separators=(",", ":"))}


def _block(item: Any) -> dict[str, Any] | None:
    """One Converse content block as an Anthropic block; None for a cache point."""
    if not isinstance(item, dict) or len(item) != 1:
        raise BedrockError(
            "ValidationException", "Each content block must have exactly one member set."
        )
    ((kind, value),) = item.items()
    if kind == "cachePoint":
        return None
    if kind == "text":
        return {"type": "text", "text": value}
    if kind == "toolUse":
        return {
            "type": "tool_use",
            "id": value.get("toolUseId"),
            "name": value.get("name"),
            "input": value.get("input", {}),
        }
    if kind == "toolResult":
        return {
            "type": "tool_result",
            "tool_use_id": value.get("toolUseId"),
            "content": [_text_of_result(c) for c in value.get("content") or ()],
        }
    if kind == "image":
        return {"type": "image", "source": value}
    if kind == "reasoningContent":
        reasoning = value.get("reasoningText") or {}
        return {
            "type": "thinking",
            "thinking": reasoning.get("text", ""),
            "signature": reasoning.get("signature", ""),
        }
    return {"type": kind, kind: value}


def _blocks(items: Any) -> list[dict[str, Any]]:
    """Content blocks, a ``cachePoint`` turning into ``cache_control`` on the block before it."""
    blocks: list[dict[str, Any]] = []
    for item in items or ():
        block = _block(item)
        if block is None:
            if blocks:
                blocks[-1]["cache_control"] = _cache_control(item["cachePoint"])
            continue
        blocks.append(block)
    return blocks


def _tools(items: Any) -> list[dict[str, Any]]:
    """A toolConfig's tools, a ``cachePoint`` turning into ``cache_control`` on the tool
    before it."""
    tools: list[dict[str, Any]] = []
    for item in items or ():
        if "cachePoint" in item:
            if tools:
                tools[-1]["cache_control"] = _cache_control(item["cachePoint"])
            continue
        spec = item.get("toolSpec") or {}
        tool = {
            "name": spec.get("name"),
            "input_schema": (spec.get("inputSchema") or {}).get("json", {}),
        }
        if spec.get("description"):
            tool["description"] = spec["description"]
        tools.append(tool)
    return tools


def to_anthropic(request: dict[str, Any], *, require_messages: bool = True) -> dict[str, Any]:
    """The Anthropic Messages body equivalent to a Converse request."""
    messages = request.get("messages")
    if require_messages and (not isinstance(messages, list) or not messages):
        raise BedrockError(
            "ValidationException",
            "A conversation must start with a user message. "
            "Try again with a conversation that starts with a user message.",
        )
    body: dict[str, Any] = {"anthropic_version": "bedrock-2023-05-31"}
    body["messages"] = [
        {"role": m.get("role"), "content": _blocks(m.get("content"))}
        for m in messages or ()
        if isinstance(m, dict)
    ]
    system = _blocks(request.get("system"))
    if system:
        body["system"] = system
    config = request.get("inferenceConfig") or {}
    body["max_tokens"] = config.get("maxTokens", DEFAULT_MAX_TOKENS)
    if "temperature" in config:
        body["temperature"] = config["temperature"]
    if "topP" in config:
        body["top_p"] = config["topP"]
    if config.get("stopSequences"):
        body["stop_sequences"] = config["stopSequences"]
    tool_config = request.get("toolConfig")
    if isinstance(tool_config, dict):
        body["tools"] = _tools(tool_config.get("tools"))
        choice = tool_config.get("toolChoice")
        if isinstance(choice, dict) and choice:
            kind = next(iter(choice))
            body["tool_choice"] = {"type": kind, **(choice[kind] or {})}
    extra = request.get("additionalModelRequestFields")
    if isinstance(extra, dict):
        body.update(extra)
    return body


def _usage(completion: Completion) -> dict[str, Any]:
    usage = completion.usage
    output = completion.output_tokens
    body: dict[str, Any] = {
        "inputTokens": usage.input_tokens,
        "outputTokens": output,
        "totalTokens": usage.input_tokens + usage.cache_read + usage.cache_write + output,
    }
    if usage.cache_read or usage.cache_write:
        body["cacheReadInputTokens"] = usage.cache_read
        body["cacheWriteInputTokens"] = usage.cache_write
    if usage.cache_write:
        # Bedrock lists 1h writes before 5m ones.
        body["cacheDetails"] = [
            {"ttl": ttl, "inputTokens": tokens}
            for ttl, tokens in (("1h", usage.cache_write_1h), ("5m", usage.cache_write_5m))
            if tokens
        ]
    return body


def _content(block: Block) -> dict[str, Any]:
    if block.kind == "text":
        return {"text": block.text}
    if block.kind == "thinking":
        return {
            "reasoningContent": {
                "reasoningText": {"text": block.text, "signature": block.signature}
            }
        }
    return {
        "toolUse": {"toolUseId": block.tool_id, "name": block.tool_name, "input": block.tool_input}
    }


def converse_body(completion: Completion, latency_ms: int) -> dict[str, Any]:
    """The ``converse`` response body."""
    return {
        "output": {
            "message": {"role": "assistant", "content": [_content(b) for b in completion.blocks]}
        },
        "stopReason": completion.stop_reason,
        "usage": _usage(completion),
        "metrics": {"latencyMs": latency_ms},
    }


def converse_events(completion: Completion) -> list[tuple[str, dict[str, Any]]]:
    """``converse-stream`` events as (event type, body); ``metadata`` gets its latency when sent."""
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    for index, block in enumerate(completion.blocks):
        if block.kind == "tool_use":
            start = {"toolUse": {"toolUseId": block.tool_id, "name": block.tool_name}}
            events.append(("contentBlockStart", {"start": start, "contentBlockIndex": index}))
            deltas: list[dict[str, Any]] = [{"toolUse": {"input": d}} for d in block.deltas if d]
        elif block.kind == "thinking":
            deltas = [{"reasoningContent": {"text": d}} for d in block.deltas]
            deltas.append({"reasoningContent": {"signature": block.signature}})
        else:
            deltas = [{"text": d} for d in block.deltas]
        events.extend(
            ("contentBlockDelta", {"delta": d, "contentBlockIndex": index}) for d in deltas
        )
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
    events.append(("messageStop", {"stopReason": completion.stop_reason}))
    events.append(("metadata", {"usage": _usage(completion), "metrics": {"latencyMs": 0}}))
    return events
