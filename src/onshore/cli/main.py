"""`onshore`: run the server, point the modal client at it, and manage tokens."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from onshore.config import DEFAULT_PORT, DataDir, ServerConfig, default_data_dir


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


def cmd_server(args: argparse.Namespace) -> int:
    from onshore.server import OnshoreServer

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = ServerConfig(
        data_dir=_data_dir(args),
        host=args.host,
        port=args.port,
        http_port=args.http_port,
        max_containers=args.max_containers,
        app_heartbeat_timeout=args.app_heartbeat_timeout,
    )

    async def main() -> None:
        server = OnshoreServer(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
        await server.start()
        print(f"Onshore server ready at {server.url}", flush=True)
        await server.wait_stopped()

    asyncio.run(main())
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    data = DataDir(_data_dir(args))
    server = data.read_json(data.server_file)
    token = data.read_json(data.token_file)
    if token is None:
        print(
            f"No Onshore token in {data.root}: start a server there first (`onshore server`)", file=sys.stderr
        )
        return 1
    url = server["url"] if server else f"http://127.0.0.1:{DEFAULT_PORT}"
    print(f"export MODAL_SERVER_URL={url}")
    print(f"export MODAL_TOKEN_ID={token['token_id']}")
    print(f"export MODAL_TOKEN_SECRET={token['token_secret']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onshore", description="A self-hosted backend for the Modal client."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add_data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="data directory (default: $ONSHORE_HOME or ~/.local/share/onshore)")

    p = sub.add_parser("server", help="run the control plane in the foreground")
    add_data_dir(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="gRPC port (0 picks a free one)")
    p.add_argument("--http-port", type=int, default=0, help="HTTP port (default: the gRPC port + 1)")
    p.add_argument("--max-containers", type=int, default=0)
    p.add_argument("--app-heartbeat-timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("env", help="print the MODAL_* variables that point the modal client at this server")
    add_data_dir(p)
    p.set_defaults(func=cmd_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
