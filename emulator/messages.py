"""Bedrock's Anthropic Messages body: validation, the deterministic reply, and its renderings.

The reply depends only on the request: its words are picked from a fixed vocabulary by a
hash of the model and the last user message, one word per output token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .errors import BedrockError
from .models import anthropic_model_name, rejects_custom_temperature
from .tokens import MAX_BREAKPOINTS, CacheUsage, Prompt, PromptCache, text_tokens

__all__ = ["Block", "Completion", "complete", "message_body", "stream_events", "validate_body"]

_VOCABULARY = (
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "bright",
    "stars",
    "drift",
    "across",
    "quiet",
    "northern",
    "skies",
    "and",
    "old",
    "rivers",
    "carry",
    "stories",
    "of",
    "distant",
    "mountains",
    "toward",
    "warm",
    "green",
    "valleys",
    "where",
    "gentle",
    "winds",
    "whisper",
    "about",
    "forgotten",
    "maps",
    "hidden",
    "treasure",
    "silver",
    "lanterns",
    "copper",
    "bells",
    "and",
    "patient",
    "gardeners",
    "planting",
    "tomorrow",
)
_VERSION = re.compile(r"^(bedrock-)?\d{4}-\d{2}-\d{2}$")
_TOOL_WORD = re.compile(r"\btools?\b", re.IGNORECASE)
# Claude Code puts its own notes in user messages; the word "tool" in them is not a request.
_REMINDER = re.compile(r"<system-reminder>.*?(</system-reminder>|$)", re.DOTALL | re.IGNORECASE)
_JSON_PIECE = 12  # characters of tool input per input_json_delta
THINKING_WORDS = 4


def _malformed(detail: str) -> BedrockError:
    return BedrockError(
        "ValidationException",
        f"Malformed input request: {detail}, please reformat your input and try again.",
    )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int | float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "JSONArray"
    if value is None:
        return "Null"
    return "JSONObject"


def validate_body(
    body: Any,
    *,
    model: str,
    allowed_betas: frozenset[str] | None,
    require_max_tokens: bool = True,
) -> None:
    """Reject what Bedrock rejects, and nothing more (unknown fields pass)."""
    if not isinstance(body, dict):
        raise _malformed(f"expected type: JSONObject, found: {_json_type(body)}")
    _validate_version(body)
    _validate_max_tokens(body, require_max_tokens=require_max_tokens)
    _validate_messages(body)
    _validate_temperature(body.get("temperature"), model=model)
    stops = body.get("stop_sequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        raise _malformed("#/stop_sequences: expected type: JSONArray of String")
    _validate_betas(body.get("anthropic_beta"), allowed_betas=allowed_betas)


def _validate_version(body: dict[str, Any]) -> None:
    version = body.get("anthropic_version")
    if version is None:
        raise _malformed("#: required key [anthropic_version] not found")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise _malformed(f"#/anthropic_version: {version} is not a valid enum value")


def _validate_max_tokens(body: dict[str, Any], *, require_max_tokens: bool) -> None:
    if require_max_tokens and "max_tokens" not in body:
        raise _malformed("#: required key [max_tokens] not found")
    max_tokens = body.get("max_tokens", 1)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _malformed(f"#/max_tokens: expected type: Integer, found: {_json_type(max_tokens)}")
    if max_tokens < 1:
        raise _malformed(f"#/max_tokens: {max_tokens} is not greater or equal to 1")


def _validate_messages(body: dict[str, Any]) -> None:
    if "messages" not in body:
        raise _malformed("#: required key [messages] not found")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _malformed(f"#/messages: expected type: JSONArray, found: {_json_type(messages)}")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _malformed(
                f"#/messages/{index}: expected type: JSONObject, found: {_json_type(message)}"
            )
        for key in ("role", "content"):
            if key not in message:
                raise _malformed(f"#/messages/{index}: required key [{key}] not found")


def _validate_temperature(temperature: Any, *, model: str) -> None:
    if temperature is None:
        return
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise _malformed(f"#/temperature: expected type: Number, found: {_json_type(temperature)}")
    if rejects_custom_temperature(model) and temperature != 1:
        raise BedrockError(
            "ValidationException",
            "temperature: only the default value of 1 is supported for this model.",
        )
    if not 0 <= temperature <= 1:
        raise BedrockError("ValidationException", "temperature: range: 0..1")


def _validate_betas(betas: Any, *, allowed_betas: frozenset[str] | None) -> None:
    if betas is None:
        return
    if not isinstance(betas, list) or not all(isinstance(b, str) for b in betas):
        raise _malformed(f"#/anthropic_beta: expected type: JSONArray, found: {_json_type(betas)}")
    if allowed_betas is not None and any(b not in allowed_betas for b in betas):
        raise BedrockError("ValidationException", "invalid beta flag")


def check_breakpoints(prompt: Prompt) -> None:
    if len(prompt.breakpoints) > MAX_BREAKPOINTS:
        raise BedrockError(
            "ValidationException",
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(prompt.breakpoints)}.",
        )


@dataclass(slots=True)
class Block:
    """One content block of the reply, already cut into the deltas a stream sends."""

    kind: str  # "text", "thinking" or "tool_use"
    deltas: list[str]
    tokens: int
    tool_id: str = ""
    tool_name: str = ""
    tool_input: dict[str, Any] = field(default_factory=dict)
    signature: str = ""

    @property
    def text(self) -> str:
        return "".join(self.deltas)


@dataclass(slots=True)
class Completion:
    """The whole deterministic reply to one request, with its usage."""

    message_id: str
    model: str
    blocks: list[Block]
    stop_reason: str
    stop_sequence: str | None
    usage: CacheUsage

    @property
    def output_tokens(self) -> int:
        return sum(block.tokens for block in self.blocks)


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                b["text"]
                for b in content
                if isinstance(b, dict)
                and b.get("type") == "text"
                and isinstance(b.get("text"), str)
            )
        return ""
    return ""


def _example(schema: Any, depth: int = 0) -> Any:
    """A deterministic value that satisfies a (simple) JSON schema."""
    if not isinstance(schema, dict) or depth > 4:
        return "emulated"
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        if not isinstance(required, list):
            required = list(properties)
        return {str(name): _example(properties.get(name), depth + 1) for name in required}
    if kind == "array":
        return [_example(schema.get("items"), depth + 1)] if schema.get("minItems") else []
    if kind == "integer":
        return schema.get("minimum", 1)
    if kind == "number":
        return schema.get("minimum", 1.5)
    if kind == "boolean":
        return True
    return "emulated"


def _asks_for_tool(messages: list[Any]) -> bool:
    """The `auto` rule: the last user message names a tool and carries no tool result.

    A message with any `tool_result` block answers an earlier tool call, so an agent's loop
    ends after one round (Claude Code appends text after its results: every block counts);
    text inside `<system-reminder>` is the client's own, not the user's request.
    """
    message = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    content = None if message is None else message.get("content")
    if isinstance(content, list):
        blocks = [b for b in content if isinstance(b, dict)]
        if any(b.get("type") == "tool_result" for b in blocks):
            return False
        content = " ".join(
            b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    if not isinstance(content, str):
        return False
    return bool(_TOOL_WORD.search(_REMINDER.sub(" ", content)))


def _wants_tool(body: dict[str, Any], tool_use: str) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and t.get("name")]
    if not tools:
        return None
    choice = body.get("tool_choice") or {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "none":
        return None
    # A forced choice is obeyed whatever the mode, as on Bedrock.
    if kind == "tool":
        return next((t for t in tools if t["name"] == choice.get("name")), tools[0])
    if kind == "any":
        return tools[0]
    if tool_use == "always" or (tool_use == "auto" and _asks_for_tool(body.get("messages") or [])):
        return tools[0]
    return None


def complete(
    body: dict[str, Any],
    *,
    model: str,
    reply_tokens: int,
    cache: PromptCache,
    tool_use: str = "auto",
    tokens_per_delta: int = 1,
) -> Completion:
    """The reply to a validated body: blocks, stop reason and usage (cache accounted)."""
    prompt = Prompt(body)
    check_breakpoints(prompt)
    usage = cache.account(prompt, model)
    messages = body.get("messages") or []
    user_text = _last_user_text(messages)
    seed = hashlib.sha256(f"{model}\x00{user_text}".encode()).digest()
    budget = int(body.get("max_tokens", reply_tokens))
    blocks: list[Block] = []
    stop_reason = "end_turn"
    stop_sequence = None

    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled" and budget > 1:
        count = min(THINKING_WORDS, budget - 1)
        words = _words(seed + b"thinking", count)
        signature = base64.b64encode(hashlib.sha256(seed + b"signature").digest()).decode()
        blocks.append(Block("thinking", _spaced(words), count, signature=signature))
        budget -= count

    tool = _wants_tool(body, tool_use)
    if tool is not None:
        arguments = _example(tool.get("input_schema"))
        if not isinstance(arguments, dict):
            arguments = {"input": arguments}
        encoded = json.dumps(arguments, separators=(",", ":"))
        pieces = [""] + [encoded[i : i + _JSON_PIECE] for i in range(0, len(encoded), _JSON_PIECE)]
        tool_id = "toolu_bdrk_01" + base64.b32encode(seed[:15]).decode().rstrip("=")[:22]
        blocks.append(
            Block(
                "tool_use",
                pieces,
                text_tokens(encoded),
                tool_id=tool_id,
                tool_name=tool["name"],
                tool_input=arguments,
            )
        )
        stop_reason = "tool_use"
    else:
        count = min(budget, reply_tokens)
        if count < reply_tokens:
            stop_reason = "max_tokens"
        deltas = _spaced(_words(seed, count))
        if deltas and stop_reason == "end_turn":
            deltas[-1] += "."
        tokens = len(deltas)
        stops = [s for s in body.get("stop_sequences") or () if s]
        if stops:
            deltas, stop_sequence, tokens = _apply_stops(deltas, stops)
            if stop_sequence is not None:
                stop_reason = "stop_sequence"
        if tokens_per_delta > 1:  # real Bedrock deltas carry several tokens each
            n = tokens_per_delta
            deltas = ["".join(deltas[i : i + n]) for i in range(0, len(deltas), n)]
        blocks.append(Block("text", deltas, tokens))

    return Completion(
        message_id="msg_bdrk_01" + uuid.uuid4().hex[:22],
        model=anthropic_model_name(model),
        blocks=blocks,
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        usage=usage,
    )


def _words(seed: bytes, count: int) -> list[str]:
    indexes = hashlib.shake_256(seed).digest(count)
    return [_VOCABULARY[i % len(_VOCABULARY)] for i in indexes]


def _spaced(words: list[str]) -> list[str]:
    if not words:
        return []
    return [words[0].capitalize()] + [" " + w for w in words[1:]]


def _apply_stops(deltas: list[str], stops: list[str]) -> tuple[list[str], str | None, int]:
    """Cut the reply where a stop sequence first appears.

    Returns the deltas kept, the sequence matched and the output tokens: the generated token
    that completed the stop sequence is billed even though it is cut from the text.
    """
    text = ""
    for index, delta in enumerate(deltas):
        text += delta
        found = [(text.find(s), s) for s in stops if s in text]
        if found:
            position, sequence = min(found)
            kept: list[str] = []
            used = 0
            for piece in deltas[: index + 1]:
                if used + len(piece) > position:
                    if position > used:
                        kept.append(piece[: position - used])
                    break
                kept.append(piece)
                used += len(piece)
            return kept, sequence, index + 1
    return deltas, None, len(deltas)


# ---------------------------------------------------------------- renderings


def usage_body(usage: CacheUsage, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m,
            "ephemeral_1h_input_tokens": usage.cache_write_1h,
        },
        "output_tokens": output_tokens,
    }


def _content(block: Block) -> dict[str, Any]:
    if block.kind == "text":
        return {"type": "text", "text": block.text}
    if block.kind == "thinking":
        return {"type": "thinking", "thinking": block.text, "signature": block.signature}
    return {
        "type": "tool_use",
        "id": block.tool_id,
        "name": block.tool_name,
        "input": block.tool_input,
    }


def message_body(completion: Completion) -> dict[str, Any]:
    """The ``invoke`` response body."""
    return {
        "id": completion.message_id,
        "type": "message",
        "role": "assistant",
        "model": completion.model,
        "content": [_content(block) for block in completion.blocks],
        "stop_reason": completion.stop_reason,
        "stop_sequence": completion.stop_sequence,
        "usage": usage_body(completion.usage, completion.output_tokens),
    }


def nova_body(completion: Completion) -> dict[str, Any]:
    """The ``invoke`` body of an Amazon Nova model: not Anthropic's shape (its usage is
    `inputTokens` / `outputTokens`), so a gateway that reads only Anthropic usage sees none."""
    text = "".join("".join(b.deltas) for b in completion.blocks if b.kind == "text")
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": completion.stop_reason,
        "usage": {
            "inputTokens": completion.usage.input_tokens,
            "outputTokens": completion.output_tokens,
            "totalTokens": completion.usage.input_tokens + completion.output_tokens,
        },
    }


def stream_events(completion: Completion) -> list[dict[str, Any]]:
    """Anthropic's stream events, ending with ``message_stop`` (metrics added when sent)."""
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": completion.message_id,
                "type": "message",
                "role": "assistant",
                "model": completion.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage_body(completion.usage, 1),
            },
        }
    ]
    for index, block in enumerate(completion.blocks):
        if block.kind == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": d} for d in block.deltas]
        elif block.kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": d} for d in block.deltas]
            deltas.append({"type": "signature_delta", "signature": block.signature})
        else:
            start = {"type": "tool_use", "id": block.tool_id, "name": block.tool_name, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": d} for d in block.deltas]
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        events.extend({"type": "content_block_delta", "index": index, "delta": d} for d in deltas)
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": completion.stop_reason,
                "stop_sequence": completion.stop_sequence,
            },
            "usage": {"output_tokens": completion.output_tokens},
        }
    )
    events.append({"type": "message_stop"})
    return events
