"""`zbrain token`: create, list and revoke API tokens, over the API or on the store.

With --data-dir (or --store URL, for PostgreSQL) the command opens the server's
database directly, through the server distribution's plugin: that is how the
first (admin) token is made on the server's host. Everything else goes through
TokenService with an admin token.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from .connection import Connection, TlsFiles
from .errors import ZBrainError
from .models import Role
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
            print_tokens(list(listed.tokens), args.json)
        else:
            revoked = await stub.RevokeToken(pb.RevokeTokenRequest(token_id=args.token_id))
            print(f"token {revoked.token.id} revoked")
    except grpc.aio.AioRpcError as error:
        raise connection.error(error) from None
    finally:
        await channel.close()
    return 0


def print_created(token: pb.TokenInfo, secret: str) -> None:
    role = Role(token.role).label
    print(secret)
    print(
        f"# token {token.id}: role {role}, organisation {token.org_id}. "
        "Keep the line above secret: it is shown only this once.",
    )


def _when(ts: timestamp_pb2.Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_tokens(tokens: list[pb.TokenInfo], as_json: bool) -> None:
    rows = [
        {
            "id": t.id,
            "org_id": t.org_id,
            "role": Role(t.role).label,
            "description": t.description,
            "created": _when(t.create_time),
            "revoked": _when(t.revoke_time),
        }
        for t in tokens
    ]
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"{'ID':<14}{'ORG':<16}{'ROLE':<8}{'CREATED':<21}{'REVOKED':<21}DESCRIPTION")
    for row in rows:
        print(
            f"{row['id']:<14}{row['org_id']:<16}{row['role']:<8}{row['created']:<21}"
            f"{row['revoked']:<21}{row['description']}"
        )
