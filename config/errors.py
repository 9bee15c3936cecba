"""Errors as JSON, never a stack trace: DRF's handler for /api, and the 404/500 handlers
in the shape of the route family's clients."""

import logging

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import JsonResponse
from rest_framework.response import Response
from rest_framework.views import exception_handler

from accounts.credential_cache import CredentialCacheUnavailable

logger = logging.getLogger(__name__)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, RequestDataTooBig):  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response({"detail": "Request body is too large."}, status=413)
    if isinstance(exc, SuspiciousOperation):  # too many fields or files, a malformed form
        return Response({"detail": "Malformed request."}, status=400)
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
