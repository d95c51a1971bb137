"""``python -m altcraft.emulator``: serve the Altcraft API emulator over HTTP."""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import LOG_LEVELS
from uvicorn.server import STARTUP_FAILURE

from altcraft.command_line import path_argument
from altcraft.emulator.app import build_app
from altcraft.emulator.replay import Replay
from altcraft.emulator.state import DEFAULT_TOKEN, Config, Emulator, demo_seed


def port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535: uvicorn served ``--port 99999`` on 34463 without a word."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0 to 65535)")
    return value


def token(text: str) -> str:
    """A non-empty token: with an empty one every request was answered 401 "API token is missing"."""
    if not text:
        raise argparse.ArgumentTypeError("the token must not be empty")
    return text


def parser() -> argparse.ArgumentParser:
    """The command line of the emulator (docs/emulator.md lists every flag)."""
    cli = argparse.ArgumentParser(prog="python -m altcraft.emulator", description=__doc__)
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=port, default=8765)
    cli.add_argument("--token", type=token, default=DEFAULT_TOKEN, help="the full-access API token")
    cli.add_argument("--seed", type=path_argument, help="JSON seed file (default: the bundled demo seed)")
    cli.add_argument(
        "--max-batch-profiles",
        type=int,
        default=Config().max_batch_profiles,
        help="items of a batch request refused above this with --strict only: the docs advise against more "
        "than 10,000 and document no refusal",
    )
    cli.add_argument(
        "--max-body-bytes",
        type=int,
        default=Config().max_body_bytes,
        help="request bodies refused (413) above this: the docs' limit, 10 MB by default",
    )
    cli.add_argument("--random-seed", type=int, default=0, help="seed of fault-rule probabilities")
    cli.add_argument(
        "--http", choices=["auto", "h11", "httptools"], default="auto", help="uvicorn HTTP protocol"
    )
    cli.add_argument(
        "--strict",
        action="store_true",
        help="checks stricter than the docs: no token in the URL, at most --max-batch-profiles items, "
        "only documented matching modes per endpoint, the matching key on every batch item",
    )
    cli.add_argument(
        "--replay",
        type=path_argument,
        help="answer with the shapes recorded by `python -m altcraft probe --record`",
    )
    cli.add_argument("--log-level", type=str.lower, choices=list(LOG_LEVELS), default="warning")
    return cli


def main(argv: list[str] | None = None) -> None:
    """Serve until stopped; a bad flag value, seed or recording is a usage error (exit status 2)."""
    cli = parser()
    args = cli.parse_args(argv)
    try:
        config = Config().updated(
            {
                "max_batch_profiles": args.max_batch_profiles,
                "max_body_bytes": args.max_body_bytes,
                "strict": args.strict,
            }
        )
    except ValueError as exc:
        cli.error(str(exc))
    try:
        seed = json.loads(args.seed.read_text("utf-8")) if args.seed else demo_seed()
        emulator = Emulator(seed, token=args.token, config=config, random_seed=args.random_seed)
    except (OSError, ValueError) as exc:
        cli.error(f"--seed {args.seed or '(bundled)'}: {exc}")
    try:
        replay = Replay.load(args.replay) if args.replay else None
    except (OSError, ValueError) as exc:
        cli.error(f"--replay {args.replay}: {exc}")
    config = uvicorn.Config(
        build_app(emulator, replay),
        host=args.host,
        port=args.port,
        http=args.http,
        log_level=args.log_level,
        access_log=False,
        # a request held by a latency rule is dropped at shutdown instead of holding the server up
        timeout_graceful_shutdown=1,
    )
    server = _Server(
        config, "the default token (docs/emulator.md)" if args.token == DEFAULT_TOKEN else "--token"
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # as uvicorn.run: an address already in use, say
        sys.exit(STARTUP_FAILURE)


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it listens whatever the log level (uvicorn says it at ``info`` only:
    ``make emulator`` printed nothing), and which token it takes without quoting it."""

    def __init__(self, config: uvicorn.Config, token_source: str) -> None:
        super().__init__(config)
        self.token_source = token_source

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            addresses = [sock.getsockname() for server in self.servers for sock in server.sockets]
            print(listening(addresses, self.token_source), flush=True)


def listening(addresses: list[tuple[Any, ...]], token_source: str) -> str:
    """The line saying where the emulator listens: each address as a URL, the API's and the control API's
    paths, and where its token comes from."""
    urls = ", ".join(f"http://{f'[{host}]' if ':' in host else host}:{port}" for host, port, *_ in addresses)
    return (
        f"Altcraft API emulator listening on {urls} (API /api/v1.1/, control API /_emulator/, no auth); "
        f"API token: {token_source}. Ctrl-C stops it."
    )


if __name__ == "__main__":
    main()
