"""JSON from untrusted clients: UTF-8 only, nested at most MAX_DEPTH levels.

Python's json parser recurses once per level: a body of 100,000 `[` raises RecursionError
(a 500) instead of a parse error, and a body just under the interpreter's limit parses but
then breaks whatever walks it recursively. The depth is checked before parsing, in C-speed
passes over the text (strings removed by a regular expression, then a running sum over the
brackets left), so a 32 MB request costs milliseconds. Real tool schemas nest a few dozen
levels at most; 256 leaves them room.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 256

# A JSON string (escapes included), written so that the regex engine never backtracks.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# The escape of a surrogate: half of a pair (an emoji from an ASCII-only encoder) or alone.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JsonLoneSurrogate(ValueError):
    """A string holds half a surrogate pair (`"\\ud800"`): valid JSON syntax, but no text."""

    def __init__(self) -> None:
        super().__init__("JSON has a string with a lone surrogate (\\ud800-\\udfff).")


class JsonTooDeep(ValueError):
    """The document nests deeper than allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON is nested deeper than {limit} levels.")
        self.limit = limit


def depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (an upper bound for broken JSON)."""
    structure = _BRACKETS.sub("", _STRING.sub("", text))
    if not structure:
        return 0
    return max(accumulate(map(_STEP.__getitem__, structure)))


def depth_check(text: str, limit: int = MAX_DEPTH) -> None:
    if text.count("[") + text.count("{") > limit and depth(text) > limit:
        raise JsonTooDeep(limit)


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON from a client. Raises ValueError: UnicodeDecodeError for bytes that are not
    UTF-8, JsonTooDeep, JsonLoneSurrogate (a string that cannot be encoded again, which
    would fail whatever encodes it later), or json.JSONDecodeError."""
    text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    depth_check(text, max_depth)
    value = json.loads(text)
    surrogate_check(text, value)
    return value


def surrogate_check(text: str, value: Any) -> None:
    """Raise JsonLoneSurrogate if `value`, parsed from `text`, has a lone surrogate."""
    if _SURROGATE_ESCAPE.search(text):  # rare: only then is the whole value checked
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JsonLoneSurrogate() from None
