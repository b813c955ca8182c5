"""`zbrain token`: create, list and revoke API tokens, over the API or on the store.

With --data-dir (or --store URL, for PostgreSQL) the command opens the server's
database directly, through the server distribution's plugin: that is how the
first (admin) token is made on the server's host. Everything else goes through
TokenService with an admin token.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from google.protobuf import timestamp_pb2

from ._convert import utc_time
from .connection import Connection, TlsFiles
from .errors import ZBrainError
from .models import Role, rfc3339
from .v1 import token_service_pb2 as pb
from .v1 import token_service_pb2_grpc


async def run_token_command(args: argparse.Namespace) -> int:
    if args.data_dir is not None or args.store is not None:
        from .cli import SERVER_MISSING, server_plugin

        plugin = server_plugin()
        if plugin is None:
            raise ZBrainError(f"zbrain token --data-dir/--store {SERVER_MISSING}")
        result: int = await plugin.offline_token_command(args)
        return result
    return await _over_api(args)


async def _over_api(args: argparse.Namespace) -> int:
    import grpc

    connection = Connection(
        args.server, args.token, TlsFiles(args.tls_ca, args.tls_cert, args.tls_key)
    )
    channel = connection.open_channel()
    stub = token_service_pb2_grpc.TokenServiceStub(channel)
    try:
        if args.action == "create":
            created = await stub.CreateToken(
                pb.CreateTokenRequest(
                    org_id=args.org,
                    role=pb.TokenRole.ValueType(Role[args.role.upper()].value),
                    description=args.description,
                )
            )
            print_created(created.token, created.secret)
        elif args.action == "list":
            listed = await stub.ListTokens(pb.ListTokensRequest(org_id=args.org or ""))
            print_tokens(list(listed.tokens), args)
        else:
            revoked = await stub.RevokeToken(pb.RevokeTokenRequest(token_id=args.token_id))
            print(f"token {revoked.token.id} revoked")
    except grpc.aio.AioRpcError as error:
        raise connection.error(error) from None
    finally:
        await channel.close()
    return 0


def print_created(token: pb.TokenInfo, secret: str) -> None:
    """The secret alone on stdout, so `export ZBRAIN_TOKEN=$(zbrain token
    create ...)` captures exactly it; what it is goes to stderr."""
    role = Role(token.role).label
    print(secret, flush=True)
    print(
        f"token {token.id}: role {role}, organisation {token.org_id}. "
        "It is shown only this once: keep it secret.",
        file=sys.stderr,
    )


def _time(ts: timestamp_pb2.Timestamp) -> datetime | None:
    return utc_time(ts) if ts.seconds or ts.nanos else None


def print_tokens(tokens: list[pb.TokenInfo], args: argparse.Namespace) -> None:
    """The tokens as a table, or with --json as JSON lines (times RFC 3339 UTC,
    null when unset)."""
    from .cli._output import Output

    out = Output.from_args(args)
    if out.json:
        for t in tokens:
            out.json_line(
                {
                    "id": t.id,
                    "org_id": t.org_id,
                    "role": Role(t.role).label,
                    "description": t.description,
                    "create_time": rfc3339(_time(t.create_time)),
                    "revoke_time": rfc3339(_time(t.revoke_time)),
                }
            )
        return
    out.table(
        ["ID", "ORG", "ROLE", "CREATED", "REVOKED", "DESCRIPTION"],
        [
            [
                t.id,
                t.org_id,
                Role(t.role).label,
                out.when(_time(t.create_time)),
                out.when(_time(t.revoke_time)),
                t.description,
            ]
            for t in tokens
        ],
    )
