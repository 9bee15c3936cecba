"""Error responses in the shape each route family's clients parse.

/bedrock answers like Bedrock (`{"message": ...}` + `x-amzn-ErrorType`, which botocore maps to
exception classes); /anthropic like Anthropic (`{"type": "error", "error": {...}}`, which the
SDK maps to its exception classes). Kinds are ours; each family names them its own way.
"""

from __future__ import annotations

import json
from enum import Enum

from django.http import HttpResponse


class Family(Enum):
    BEDROCK = "bedrock"
    ANTHROPIC = "anthropic"


# kind -> (status, Bedrock error type, Anthropic error type)
KINDS: dict[str, tuple[int, str, str]] = {
    "invalid": (400, "ValidationException", "invalid_request_error"),
    "auth": (401, "UnrecognizedClientException", "authentication_error"),
    "forbidden": (403, "AccessDeniedException", "permission_error"),
    "not_found": (404, "ResourceNotFoundException", "not_found_error"),
    "method": (405, "ValidationException", "invalid_request_error"),
    "too_large": (413, "ValidationException", "request_too_large"),
    "media_type": (415, "ValidationException", "invalid_request_error"),
    "cap": (429, "ThrottlingException", "rate_limit_error"),
    "throttled": (429, "ThrottlingException", "rate_limit_error"),  # failed credentials
    "bad_gateway": (502, "InternalServerException", "api_error"),
    "unavailable": (503, "ServiceUnavailableException", "overloaded_error"),
    "timeout": (504, "ModelTimeoutException", "api_error"),
}


class ProxyError(Exception):
    """An error the proxy answers itself, before or instead of relaying Bedrock's."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        extra: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return KINDS[self.kind][0]

    def response(self, family: Family, request_id: str) -> HttpResponse:
        status, bedrock_type, anthropic_type = KINDS[self.kind]
        if family is Family.BEDROCK:
            body = {"message": self.message, **self.extra}
            headers = {"x-amzn-ErrorType": bedrock_type, "x-amzn-requestid": request_id}
        else:
            body = {
                "type": "error",
                "error": {"type": anthropic_type, "message": self.message, **self.extra},
            }
            headers = {"request-id": request_id}
        response = HttpResponse(
            json.dumps(body), status=status, content_type="application/json", headers=headers
        )
        for name, value in self.headers.items():
            response[name] = value
        return response
