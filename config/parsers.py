"""DRF parsers for /api: JSON from untrusted clients, with the limits of config/jsonlimits.py
(DRF's own parser lets 100,000 nested `[` raise RecursionError, a 500, and passes a lone
surrogate on to whatever encodes it next, another 500)."""

from __future__ import annotations

import io

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from config import jsonlimits


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing (400) a document nested deeper than jsonlimits.MAX_DEPTH."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        encoding = (parser_context or {}).get("encoding") or "utf-8"
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise ParseError(f"JSON parse error - the body is not valid {encoding}") from None
        try:
            jsonlimits.depth_check(text)
        except jsonlimits.JsonTooDeep as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        value = super().parse(io.BytesIO(raw), media_type, parser_context)
        try:
            jsonlimits.surrogate_check(text, value)
        except jsonlimits.JsonLoneSurrogate as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        return value
