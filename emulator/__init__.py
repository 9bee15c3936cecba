"""A local AWS Bedrock runtime emulator that real clients cannot tell from Bedrock.

Run it::

    python -m emulator --port 8900                       # http://127.0.0.1:8900
    python -m emulator --port 8443 --certfile cert.pem --keyfile key.pem
    python -m emulator.certs --out .certs                # a self-signed cert for the above

It is a raw ASGI application (``emulator.app.create_app``) served by uvicorn, with no Django
and no web framework, so it is never the bottleneck of a gateway benchmark.

Operations, at the paths botocore's ``bedrock-runtime`` client uses (model id percent-encoded;
the verb is the last path segment, so ARNs work): ``POST /model/{id}/invoke``,
``/invoke-with-response-stream`` (AWS event stream, Anthropic events in ``chunk`` frames),
``/converse``, ``/converse-stream``, ``/count-tokens``; and ``GET /ping`` for readiness.

Authentication: SigV4 (service ``bedrock``, any region) against ``--access-key`` /
``--secret-key`` (AWS's documented example pair by default), or ``Authorization: Bearer`` (any
key, or only ``--api-keys``). Models: ``emulator.models.KNOWN_MODELS`` and ``resolve_model``.

Replies are deterministic: words chosen by a hash of the model and the last user message, one
word per output token, ``min(max_tokens, reply_tokens)`` of them (24 by default).

Token rule (``emulator.tokens``): ceil(characters / 4) per text piece — system text, each text
or thinking block, each tool definition's compact JSON, a tool_use's name and input JSON — plus
3 per message, 1600 per image, and a non-text block's compact JSON otherwise. Prompt caching
follows Anthropic: the tokens up to the last ``cache_control`` block form the cached prefix;
a prefix seen within its TTL (5 minutes, or 1 hour for ``ttl: "1h"``) is read from cache.

Knobs, as flags or per-request headers (header wins): ``x-emulator-ttfb-ms``,
``-tokens-per-second``, ``-reply-tokens``, ``-error``, ``-error-rate``, ``-stream-error``,
``-stream-error-after``, ``-cut-after``, ``-stall-ms``, ``-stall-after``, ``-tool-use``,
``-tokens-per-delta``, ``-omit-usage``.

``emulator.eventstream`` holds the event-stream encoder and an incremental, CRC-checking decoder
that the gateway reuses to read usage from relayed streams.
"""

__all__: list[str] = []
