"""The server's part of the `zbrain` command line: `zbrain serve`, and the token
commands that work on a store directly (`--data-dir`, `--store`).

The client distribution's command line finds this module through the
`zbrain.commands` entry point; it imports nothing heavy until a command runs,
so `zbrain --help` stays quick.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

LOG_FORMATS = ("text", "json")

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add `zbrain serve`, `backup` and `restore` with `command(name, handler,
    help)`, the client's factory."""
    p = command(
        "backup",
        cmd_backup,
        "copy a data directory's store (SQLite) while the server runs: zbrain backup "
        "--data-dir DIR OUT",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="a new directory for the backup")
    p.add_argument("--data-dir", type=Path, required=True, help="the data directory of the server")
    p.add_argument(
        "--artifacts-dir", type=Path, help="where its artifacts live (default: DATA_DIR/artifacts)"
    )
    p = command(
        "restore",
        cmd_restore,
        "copy a backup into a data directory no server is using: zbrain restore BACKUP "
        "--data-dir DIR",
    )
    p.add_argument("backup", type=Path, metavar="BACKUP", help="a directory `zbrain backup` made")
    p.add_argument("--data-dir", type=Path, required=True, help="the data directory to fill")
    p.add_argument("--force", action="store_true", help="replace a database already there")

    p = command("serve", cmd_serve, "run the ZBrain server")
    p.add_argument(
        "--listen", help="address to listen on (default: $ZBRAIN_LISTEN or 127.0.0.1:50051)"
    )
    p.add_argument(
        "--http-listen",
        metavar="HOST:PORT",
        help="also serve the HTTP/JSON API, its WebSockets and the web console at "
        "http://HOST:PORT/ (default: $ZBRAIN_HTTP_LISTEN, else off)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="where the database lives (default: $ZDB_DATA or ./zbrain-data)",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="a postgresql://user@host:port/database URL to share with other replicas "
        "(default: $ZBRAIN_STORE, else the SQLite file in DATA_DIR)",
    )
    p.add_argument(
        "--artifacts-dir",
        type=Path,
        help="where artifacts live (default: $ZBRAIN_ARTIFACTS or DATA_DIR/artifacts)",
    )
    p.add_argument(
        "--workers", type=int, metavar="N", help="also run a local worker process with N slots"
    )
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=argparse.SUPPRESS,  # unset here keeps `zbrain --log-format json serve`'s
        help="text (default) or json lines, the banner too ($ZBRAIN_LOG_FORMAT)",
    )
    p.add_argument(
        "--auth",
        choices=("required", "off"),
        help="require tokens (default: required once a token exists in the store)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without auth and TLS (not recommended)",
    )
    p.add_argument("--tls-cert", type=Path, help="server certificate (PEM); turns on TLS")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument(
        "--tls-client-ca", type=Path, help="require client certificates signed by this CA"
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics ($ZBRAIN_METRICS_LISTEN)",
    )


async def cmd_serve(args: argparse.Namespace) -> int:
    from opentelemetry import trace

    from zbrain import telemetry

    from .app import serve
    from .config import ServerConfig
    from .dispatch.metrics import Telemetry

    exporter = telemetry.exporter_from_env()
    metrics_listen = args.metrics_listen or os.environ.get("ZBRAIN_METRICS_LISTEN")
    providers = telemetry.configure(
        "zbrain-server", exporter=exporter, metrics_listen=metrics_listen
    )
    config = ServerConfig.from_env(
        listen=args.listen,
        http_listen=args.http_listen,
        data_dir=args.data_dir,
        store_url=args.store,
        artifacts_dir=args.artifacts_dir,
        local_workers=args.workers,
        auth=args.auth,
        insecure=args.insecure or None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
    )
    try:
        # Spans are recorded only when our exporter sends them somewhere; a
        # tracer provider installed by someone else (opentelemetry-instrument)
        # keeps them recorded too.
        record = exporter != "none" or trace.get_tracer_provider() is not providers.tracer_provider
        metrics_url = f"http://{metrics_listen}/metrics" if metrics_listen else None
        await serve(config, Telemetry(record_spans=record), metrics_url)
    finally:
        providers.shutdown()
    return 0


async def cmd_backup(args: argparse.Namespace) -> int:
    from .store.sqlite.backup import backup

    copied = backup(args.data_dir, args.out, args.artifacts_dir)
    print(
        f"backed up {copied.jobs} jobs and {copied.blobs} artifact blobs "
        f"({copied.bytes} bytes) to {args.out}"
    )
    return 0


async def cmd_restore(args: argparse.Namespace) -> int:
    from .store.sqlite.backup import restore

    copied = restore(args.backup, args.data_dir, force=args.force)
    print(
        f"restored {copied.jobs} jobs and {copied.blobs} artifact blobs into {args.data_dir}; "
        f"start it with: zbrain serve --data-dir {args.data_dir}"
    )
    return 0


async def offline_token_command(args: argparse.Namespace) -> int:
    """`zbrain token create|list|revoke --data-dir DIR` (or `--store URL`): on the
    server's store directly, which is how the first admin token is made."""
    from zbrain.models import Role
    from zbrain.tokens import print_created, print_tokens

    from .core.model import now_us
    from .dispatch.tokens import create_token
    from .rpc.codec import EVENT_CODEC, token_to_proto
    from .store import open_store

    store = await open_store(args.data_dir or Path("."), args.store, EVENT_CODEC)
    try:
        if args.action == "create":
            token, bearer = await create_token(
                store, args.org, Role[args.role.upper()], args.description
            )
            print_created(token_to_proto(token), bearer)
        elif args.action == "list":
            print_tokens([token_to_proto(t) for t in await store.list_tokens(args.org)], args)
        else:
            token = await store.revoke_token(args.token_id, now_us())
            print(f"token {token.id} revoked")
    finally:
        await store.close()
    return 0
