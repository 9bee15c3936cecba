"""``python -m emulator --port P``: serve the Bedrock runtime emulator with uvicorn."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Sequence

import uvicorn

from .app import create_app
from .config import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_ALLOWED_BETAS,
    DEFAULT_SECRET_KEY,
    TOOL_USE_MODES,
    Knobs,
    Settings,
)


def _csv(value: str) -> frozenset[str]:
    return frozenset(item.strip() for item in value.split(",") if item.strip())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m emulator", description="A local AWS Bedrock runtime emulator."
    )
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8900, help="0 picks a free port (printed)")
    server.add_argument("--certfile", help="PEM certificate: serve HTTPS")
    server.add_argument("--keyfile", help="PEM key for --certfile")
    server.add_argument("--log-level", default="warning")
    server.add_argument("--access-log", action="store_true", help="log every request")

    auth = parser.add_argument_group("authentication")
    auth.add_argument("--access-key", default=DEFAULT_ACCESS_KEY, help="SigV4 access key id")
    auth.add_argument("--secret-key", default=DEFAULT_SECRET_KEY, help="SigV4 secret key")
    auth.add_argument(
        "--api-keys", type=_csv, help="accepted bearer keys, comma-separated (default: any)"
    )
    auth.add_argument("--no-auth", action="store_true", help="also accept unauthenticated requests")
    parser.add_argument(
        "--allowed-betas",
        default=",".join(sorted(DEFAULT_ALLOWED_BETAS)),
        help="anthropic_beta values served, comma-separated; '*' accepts any",
    )
    parser.add_argument(
        "--require-profiles",
        action="store_true",
        help="reject base ids of models Bedrock serves only through inference profiles",
    )

    knobs = parser.add_argument_group("knobs (each also a per-request x-emulator-* header)")
    defaults = Knobs()
    knobs.add_argument("--ttfb-ms", type=float, default=defaults.ttfb_ms)
    knobs.add_argument("--tokens-per-second", type=float, default=defaults.tokens_per_second)
    knobs.add_argument("--reply-tokens", type=int, default=defaults.reply_tokens)
    knobs.add_argument("--error", default=defaults.error)
    knobs.add_argument("--error-rate", type=float, default=defaults.error_rate)
    knobs.add_argument("--stream-error", default=defaults.stream_error)
    knobs.add_argument("--stream-error-after", type=int, default=defaults.stream_error_after)
    knobs.add_argument("--cut-after", type=int, default=defaults.cut_after)
    knobs.add_argument("--stall-ms", type=float, default=defaults.stall_ms)
    knobs.add_argument("--stall-after", type=int, default=defaults.stall_after)
    knobs.add_argument(
        "--tool-use",
        choices=TOOL_USE_MODES,
        default=defaults.tool_use,
        help="when tools are given and tool_choice does not force one: reply with a tool_use "
        "by the auto rule, always, or never",
    )
    knobs.add_argument("--tokens-per-delta", type=int, default=defaults.tokens_per_delta)
    knobs.add_argument(
        "--omit-usage", action="store_true", help="answer without usage (an unmeterable model)"
    )
    args = parser.parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        parser.error("--certfile and --keyfile go together")
    return args


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The emulator's settings from parsed command-line arguments."""
    knobs = Knobs(
        ttfb_ms=args.ttfb_ms,
        tokens_per_second=args.tokens_per_second,
        reply_tokens=args.reply_tokens,
        error=args.error,
        error_rate=args.error_rate,
        stream_error=args.stream_error,
        stream_error_after=args.stream_error_after,
        cut_after=args.cut_after,
        stall_ms=args.stall_ms,
        stall_after=args.stall_after,
        tool_use=args.tool_use,
        tokens_per_delta=max(1, args.tokens_per_delta),
        omit_usage=args.omit_usage,
    )
    betas = None if args.allowed_betas.strip() == "*" else _csv(args.allowed_betas)
    return Settings(
        knobs=knobs,
        credentials={args.access_key: args.secret_key},
        api_keys=args.api_keys,
        allowed_betas=betas,
        require_auth=not args.no_auth,
        require_profiles=args.require_profiles,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    app = create_app(settings_from_args(args))
    # Bind first, so that --port 0 can report the port it got before serving.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    port = sock.getsockname()[1]
    scheme = "https" if args.certfile else "http"
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    print(f"emulator listening on {scheme}://{host}:{port}", flush=True)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=args.access_log,
        log_level=args.log_level,
        server_header=False,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
        backlog=2048,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
