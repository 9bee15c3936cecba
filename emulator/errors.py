"""Bedrock's errors: HTTP status, ``x-amzn-ErrorType`` and ``{"message": ...}`` body."""

from __future__ import annotations

__all__ = ["ERRORS", "BedrockError", "error_by_name"]

# name -> (HTTP status, default message). The messages are Bedrock's own wording where known.
ERRORS: dict[str, tuple[int, str]] = {
    "ValidationException": (
        400,
        "Malformed input request, please reformat your input and try again.",
    ),
    "ServiceQuotaExceededException": (
        400,
        "Your request exceeded the service quota for your account. "
        "You can view your quotas at the Service Quotas console.",
    ),
    "AccessDeniedException": (
        403,
        "You don't have access to the model with the specified model ID.",
    ),
    "UnrecognizedClientException": (403, "The security token included in the request is invalid."),
    "InvalidSignatureException": (
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. "
        "Consult the service documentation for details.",
    ),
    "MissingAuthenticationTokenException": (403, "Missing Authentication Token"),
    "IncompleteSignatureException": (400, "Authorization header requires 'Credential' parameter."),
    "ResourceNotFoundException": (
        404,
        "Could not resolve the foundation model from the provided model identifier.",
    ),
    "UnknownOperationException": (404, "Unknown operation."),
    "ModelTimeoutException": (
        408,
        "Model has timed out in processing the request. Try your request again.",
    ),
    "ModelErrorException": (
        424,
        "The model encountered an error processing the request. Try your request again.",
    ),
    "ModelStreamErrorException": (
        424,
        "The model encountered an error while streaming the response.",
    ),
    "ThrottlingException": (429, "Too many requests, please wait before trying again."),
    "ModelNotReadyException": (
        429,
        "Model is not ready to serve inference requests. The AWS SDK will automatically retry "
        "the operation up to 5 times.",
    ),
    "InternalServerException": (
        500,
        "The system encountered an unexpected error during processing. Try your request again.",
    ),
    "ServiceUnavailableException": (503, "Bedrock is unable to process your request."),
}

# The members of Bedrock's ResponseStream / ConverseStreamOutput unions: only these can be
# sent as an exception frame; botocore turns any other into a generic EventStreamError.
STREAM_EXCEPTIONS = frozenset(
    {
        "InternalServerException",
        "ModelStreamErrorException",
        "ValidationException",
        "ThrottlingException",
        "ModelTimeoutException",
        "ServiceUnavailableException",
    }
)

_BY_LOWER = {name.lower(): name for name in ERRORS} | {
    name.lower().removesuffix("exception"): name for name in ERRORS
}


def error_by_name(name: str) -> str | None:
    """The canonical name for ``ThrottlingException``, ``throttlingException`` or ``throttling``."""
    return _BY_LOWER.get(name.strip().lower())


class BedrockError(Exception):
    """An error answered before any response byte: status, error type and message."""

    def __init__(self, name: str, message: str | None = None) -> None:
        status, default = ERRORS[name]
        super().__init__(message or default)
        self.name = name
        self.status = status
        self.message = message or default

    @property
    def stream_name(self) -> str:
        """The lowerCamel ``:exception-type`` of the same error inside an event stream."""
        return self.name[0].lower() + self.name[1:]

    def headers(self) -> list[tuple[bytes, bytes]]:
        # botocore's rest-json parser keeps the part of x-amzn-ErrorType before the colon.
        return [
            (
                b"x-amzn-errortype",
                f"{self.name}:http://internal.amazon.com/coral/com.amazon.bedrock/".encode(),
            )
        ]
