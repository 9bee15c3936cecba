"""Errors as JSON, never a stack trace: DRF's handler for /api, the 404/500 handlers in the
shape of the route family's clients, and the OpenAPI description of /api's error answers."""

import logging

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import JsonResponse
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import exception_handler

from accounts.credential_cache import CredentialCacheUnavailable
from config.proxy import csrf_body

logger = logging.getLogger(__name__)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, RequestDataTooBig):  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response({"detail": "Request body is too large."}, status=413)
    if isinstance(exc, SuspiciousOperation):  # too many fields or files, a malformed form
        return Response({"detail": "Malformed request."}, status=400)
    if isinstance(exc, PermissionDenied) and str(exc.detail).startswith("CSRF Failed: "):
        # DRF's own CSRF check (session-authenticated calls): say which setting is missing.
        request = getattr(context.get("request"), "_request", None)
        if request is not None:
            return Response(csrf_body(request, str(exc.detail).removeprefix("CSRF Failed: ")), 403)
    response = exception_handler(exc, context)
    if response is None and isinstance(exc, CredentialCacheUnavailable):
        return Response({"detail": exc.message}, status=503)
    if response is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
        return Response({"detail": "Internal server error."}, status=500)
    return response


def _family_body(request, status: int, message: str) -> tuple[dict, dict]:
    if request.path.startswith("/anthropic/"):
        kind = {404: "not_found_error", 500: "api_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}, {}
    if request.path.startswith("/bedrock/"):
        kind = {404: "ResourceNotFoundException", 500: "InternalServerException"}[status]
        return {"message": message}, {"x-amzn-ErrorType": kind}
    return {"detail": message}, {}


def not_found(request, exception=None) -> JsonResponse:
    body, headers = _family_body(request, 404, "Not found.")
    return JsonResponse(body, status=404, headers=headers)


def server_error(request) -> JsonResponse:
    body, headers = _family_body(request, 500, "Internal server error.")
    return JsonResponse(body, status=500, headers=headers)


# --- The error answers in the OpenAPI schema ---------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    """Authentication, permission, not found, body too large, unsupported media type: one
    message."""

    detail = serializers.CharField()


VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "description": "Invalid input: the messages per field (`non_field_errors` for the whole "
    "body), or `detail` when the body could not be parsed at all.",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": {
        "anyOf": [{"type": "array", "items": {}}, {"type": "object"}, {"type": "string"}]
    },
    "minProperties": 1,
}
_DESCRIPTIONS = {
    "400": "Invalid input",
    "401": "Missing, invalid, expired or revoked credentials",
    "403": "Not allowed",
    "404": "Not found",
    "413": "Request body too large",
    "415": "Unsupported media type",
    "429": "Too many failed credentials from this address (Retry-After)",
}


class ApiSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the error answers every /api view may give, in the
    shapes config.errors produces: 400 `{"field": [...]}` where there is input (a body or
    query parameters), `{"detail": ...}` for 401 (always), 403 (unless anyone may call), 404
    (a path parameter), 413/415 (a body), 429 (credentials checked: the failed-credential
    throttle). A view's own `extend_schema` responses win."""

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        parameters = operation.get("parameters", [])
        has_body = "requestBody" in operation
        codes = ["401"]
        if has_body or any(p.get("in") == "query" for p in parameters):
            codes.append("400")
        if not all(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            codes.append("403")
        if any(p.get("in") == "path" for p in parameters):
            codes.append("404")
        if has_body:
            codes += ["413", "415"]
        if self.view.get_authenticators():
            codes.append("429")
        responses = operation["responses"]
        for code in sorted(codes):
            if code not in responses:
                responses[code] = self.error_response(code)
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def error_response(self, code: str) -> dict:
        if code == "400":
            component = ResolvedComponent(
                name="ValidationError",
                type=ResolvedComponent.SCHEMA,
                schema=VALIDATION_ERROR_SCHEMA,
                object="ValidationError",
            )
            self.registry.register_on_missing(component)
        else:
            component = self.resolve_serializer(ErrorDetailSerializer, "response")
        return {
            "content": {"application/json": {"schema": component.ref}},
            "description": _DESCRIPTIONS[code],
        }
