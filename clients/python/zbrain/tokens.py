"""`zbrain token`: create, list and revoke API tokens, over the API or on the store.

With --data-dir (or --store URL, for PostgreSQL) the command opens the server's
database directly: that is how the first (admin) token is made on the server's
host. Everything else goes through TokenService with an admin token.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf import timestamp_pb2

from .client import TlsFiles, _error, open_channel
from .v1 import token_service_pb2 as pb
from .v1 import token_service_pb2_grpc

ROLES = {
    "client": pb.TOKEN_ROLE_CLIENT,
    "worker": pb.TOKEN_ROLE_WORKER,
    "admin": pb.TOKEN_ROLE_ADMIN,
}


async def run_token_command(args: argparse.Namespace) -> int:
    if args.data_dir is not None or args.store is not None:
        return await _on_store(args)
    return await _over_api(args)


async def _over_api(args: argparse.Namespace) -> int:
    import grpc

    channel = open_channel(
        args.server, token=args.token, tls=TlsFiles(args.tls_ca, args.tls_cert, args.tls_key)
    )
    stub = token_service_pb2_grpc.TokenServiceStub(channel)
    try:
        if args.action == "create":
            created = await stub.CreateToken(
                pb.CreateTokenRequest(
                    org_id=args.org, role=ROLES[args.role], description=args.description
                )
            )
            _print_created(created.token, created.secret)
        elif args.action == "list":
            listed = await stub.ListTokens(pb.ListTokensRequest(org_id=args.org or ""))
            _print_tokens(list(listed.tokens), args.json)
        else:
            revoked = await stub.RevokeToken(pb.RevokeTokenRequest(token_id=args.token_id))
            print(f"token {revoked.token.id} revoked")
    except grpc.aio.AioRpcError as error:
        raise _error(args.server, error) from None
    finally:
        await channel.close()
    return 0


async def _on_store(args: argparse.Namespace) -> int:
    from zbrain_server.auth import Role
    from zbrain_server.model import now_us
    from zbrain_server.store import open_store
    from zbrain_server.token_service import create_token, token_to_proto

    store = await open_store(args.data_dir or Path("."), args.store)
    try:
        if args.action == "create":
            token, bearer = await create_token(
                store, args.org, Role[args.role.upper()], args.description
            )
            _print_created(token_to_proto(token), bearer)
        elif args.action == "list":
            _print_tokens([token_to_proto(t) for t in await store.list_tokens(args.org)], args.json)
        else:
            token = await store.revoke_token(args.token_id, now_us())
            print(f"token {token.id} revoked")
    finally:
        await store.close()
    return 0


def _print_created(token: pb.TokenInfo, secret: str) -> None:
    role = pb.TokenRole.Name(token.role).removeprefix("TOKEN_ROLE_").lower()
    print(secret)
    print(
        f"# token {token.id}: role {role}, organisation {token.org_id}. "
        "Keep the line above secret: it is shown only this once.",
    )


def _when(ts: timestamp_pb2.Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_tokens(tokens: list[pb.TokenInfo], as_json: bool) -> None:
    rows = [
        {
            "id": t.id,
            "org_id": t.org_id,
            "role": pb.TokenRole.Name(t.role).removeprefix("TOKEN_ROLE_").lower(),
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
