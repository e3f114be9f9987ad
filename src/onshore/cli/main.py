"""`onshore`: the argument parser and the dispatch to each command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

from onshore.cli import client, embedded, status, tokens
from onshore.cli.embedded import CliError
from onshore.config import (
    DEFAULT_DOCKER_NETWORK,
    DEFAULT_PORT,
    DataDir,
    DataDirError,
    ServerConfig,
)
from onshore.errors import Unavailable
from onshore.runtimes.gpu_inventory import emulated_gpus


def _data(args: argparse.Namespace) -> DataDir:
    return embedded.resolve_data_dir(args.data_dir)


def cmd_server(args: argparse.Namespace) -> int:
    from onshore.runtimes.docker.runtime import EngineUnavailable
    from onshore.server import BACKENDS, OnshoreServer

    if args.runtime not in BACKENDS:
        known = ", ".join(BACKENDS)
        raise CliError(f"--runtime {args.runtime!r} is not a backend here: choose one of {known}")
    data = _data(args)
    running = embedded.find_running(data)
    if running is not None:
        raise CliError(
            f"An Onshore server already runs for {data.root} at {running.url} (pid {running.pid}); "
            "stop it first (`onshore stop`) or pick another --data-dir"
        )

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # -v is for Onshore's own debug lines: the HTTP/2 libraries' would print every header, token secrets too.
    for noisy in ("hpack", "h2", "grpclib"):
        logging.getLogger(noisy).setLevel(logging.INFO)
    # grpclib logs each stream a client resets at INFO: every web request's body stream ends that way (the
    # container drops it once the app has answered).
    logging.getLogger("grpclib.server").setLevel(logging.WARNING)
    if args.runtime != "docker":
        given = [
            f
            for f, v in (("--docker-host", args.docker_host), ("--docker-network", args.docker_network))
            if v
        ]
        if given:
            raise CliError(f"{' and '.join(given)} apply to --runtime docker only")
    elif args.isolation != "auto":
        raise CliError("--isolation applies to --runtime process only: docker containers are always isolated")
    config = ServerConfig(
        data_dir=data.root,
        host=args.host,
        port=args.port,
        http_port=args.http_port,
        runtime=args.runtime,
        docker_host=args.docker_host or "",
        docker_network=args.docker_network or DEFAULT_DOCKER_NETWORK,
        max_containers=args.max_containers,
        isolation=args.isolation,
        web_domain=args.web_domain,
        public_url=args.public_url or "",
        app_heartbeat_timeout=args.app_heartbeat_timeout,
        gpus=args.gpus or "",
        gpu_fallback=args.gpu_fallback,
    )
    if config.gpus:
        try:
            emulated_gpus(config.gpus)
        except ValueError as exc:
            raise CliError(str(exc)) from None

    async def main() -> None:
        server = OnshoreServer(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
        try:
            await server.start()
        except EngineUnavailable as exc:
            await server.stop()
            raise CliError(str(exc)) from None
        except (DataDirError, Unavailable):
            await server.stop()
            raise
        print(f"Onshore server ready at {server.url}", flush=True)
        await server.wait_stopped()

    asyncio.run(main())
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    data = _data(args)
    token = data.read_json(data.token_file)
    if token is None:
        print(
            f"No Onshore token in {data.root}: start a server there first (`onshore start`)", file=sys.stderr
        )
        return 1
    running = embedded.find_running(data)
    if running is None:
        print(
            f"No Onshore server runs for {data.root}: the client will not reach it until one does "
            "(`onshore start`)",
            file=sys.stderr,
        )
    url = running.url if running else f"http://127.0.0.1:{DEFAULT_PORT}"
    print(f"export MODAL_SERVER_URL={url}")
    print(f"export MODAL_TOKEN_ID={token['token_id']}")
    print(f"export MODAL_TOKEN_SECRET={token['token_secret']}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    data = _data(args)
    server, started = embedded.ensure_server(data)
    verb = "Started" if started else "Already running:"
    print(f"{verb} an Onshore server at {server.url} (pid {server.pid}) for {data.root}")
    command = sys.argv[0] if os.path.basename(sys.argv[0]) == "onshore" else "onshore"  # as the user typed it
    data_dir = f" --data-dir {args.data_dir}" if args.data_dir else ""
    print(f'Point the modal client at it with: eval "$({command} env{data_dir})"', file=sys.stderr)
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
    p.add_argument(
        "--runtime",
        default="process",
        metavar="BACKEND",
        help="where containers run: process (host processes, the default) or docker (Docker containers of "
        "real images)",
    )
    p.add_argument(
        "--docker-host",
        metavar="URL",
        help="--runtime docker: the engine's URL (default: $DOCKER_HOST, else unix:///var/run/docker.sock)",
    )
    p.add_argument(
        "--docker-network",
        metavar="NAME",
        help=f"--runtime docker: the network containers join (default: {DEFAULT_DOCKER_NETWORK})",
    )
    p.add_argument(
        "--isolation",
        choices=("auto", "none"),
        default="auto",
        help="process runtime: isolate containers in Linux namespaces where the host allows it (auto, the "
        "default), or run them as plain subprocesses (none); what needs isolation is then refused",
    )
    p.add_argument(
        "--web-domain",
        default="localhost",
        metavar="DOMAIN",
        help="web endpoints also answer at <label>.DOMAIN by Host header "
        "(default: localhost; '' for paths only)",
    )
    p.add_argument(
        "--public-url",
        metavar="URL",
        help="the HTTP port's address as other machines reach it, for the web URLs handed out "
        "(default: http://HOST:HTTP_PORT)",
    )
    p.add_argument(
        "--gpus",
        metavar="TYPE:COUNT,...",
        help='an emulated GPU inventory, e.g. "T4:1,H100:2": containers are placed on these GPUs and get '
        "CUDA_VISIBLE_DEVICES as with real ones, without devices (testing; default: the GPUs NVML reports)",
    )
    p.add_argument(
        "--gpu-fallback",
        choices=("closest", "strict"),
        default="closest",
        help="a function asks for a GPU type this server lacks: run it on the closest GPU with at least "
        "that memory (closest, the default; logged), or refuse it (strict)",
    )
    p.add_argument("--app-heartbeat-timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser(
        "start",
        help="start the data dir's server in the background if none runs (what run/deploy/serve do first)",
    )
    add_data_dir(p)
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("env", help="print the MODAL_* variables that point the modal client at this server")
    add_data_dir(p)
    p.set_defaults(func=cmd_env)

    for command, verb in (("run", "run"), ("deploy", "deploy"), ("serve", "serve")):
        p = sub.add_parser(
            command,
            help=f"{verb} an app with `modal {command}`, starting a background server if none runs",
            description=(
                f"Start this data dir's Onshore server in the background if it is not running, then run "
                f"`modal {command} FILE [ARGS...]` against it. Everything after the onshore options "
                f"(--data-dir, which must come first) goes to `modal {command}` unchanged."
            ),
        )
        add_data_dir(p)
        p.add_argument(
            "modal_args", nargs="*", metavar="FILE [ARGS...]", help=f"arguments of `modal {command}`"
        )
        p.set_defaults(func=_client_command(command))

    p = sub.add_parser("stop", help="stop the background server of a data dir")
    add_data_dir(p)
    p.set_defaults(func=lambda a: embedded.cmd_stop(_data(a)))

    p = sub.add_parser(
        "status",
        help="show whether the server runs, its apps and containers",
        description=f"Exit code 0 when the server runs, {status.NOT_RUNNING_EXIT} when it does not.",
    )
    add_data_dir(p)
    p.add_argument("--all", action="store_true", help="list every stopped app, not only the recent ones")
    p.set_defaults(func=lambda a: status.cmd_status(_data(a), a.all))

    p = sub.add_parser("token", help="create, list and revoke API tokens")
    token_sub = p.add_subparsers(dest="token_command", required=True)
    t = token_sub.add_parser("create", help="create a token and print its secret (shown only once)")
    add_data_dir(t)
    t.add_argument("--label", default="", help="a note to recognise the token by")
    t.add_argument(
        "--proxy",
        action="store_true",
        help="a proxy token: for web endpoints with requires_proxy_auth=True "
        "(Modal-Key/Modal-Secret headers)",
    )
    t.set_defaults(func=lambda a: tokens.cmd_create(_data(a), a.label, a.proxy))
    t = token_sub.add_parser("list", help="list tokens: id, label, created, revoked")
    add_data_dir(t)
    t.set_defaults(func=lambda a: tokens.cmd_list(_data(a)))
    t = token_sub.add_parser("revoke", help="revoke a token; the server refuses it within seconds")
    add_data_dir(t)
    t.add_argument("token_id")
    t.set_defaults(func=lambda a: tokens.cmd_revoke(_data(a), a.token_id))
    return parser


def _client_command(command: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return client.cmd_client(command, _data(args), list(args.modal_args))

    return run


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse argv; for run/deploy/serve only the leading onshore options are ours, the rest passes through."""
    parser = build_parser()
    if argv and argv[0] in client.CLIENT_COMMANDS:
        ours, passthrough = client.split_args(argv[1:])
        args = parser.parse_args([argv[0], *ours])
        if not passthrough:
            parser.error(f"`onshore {argv[0]}` needs the app FILE (see `onshore {argv[0]} --help`)")
        args.modal_args = passthrough
        return args
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except (CliError, DataDirError, Unavailable) as exc:  # a data dir or database it cannot use: one line
        print(f"onshore: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
