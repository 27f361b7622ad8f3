"""`python -m orchestrator admin ...`: tenants and API keys; parked messages (list, replay)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator.domain.validation import validate_tenant_id
from orchestrator.ports import ParkedMessages, Tenants


def run(tenants: Tenants, parked_messages: ParkedMessages, argv: Sequence[str]) -> int:
    # main.py passes the Postgres adapters; the module docstring is the --help text.
    parser = argparse.ArgumentParser(prog="python -m orchestrator admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    create_tenant = commands.add_parser("create-tenant", help="add a tenant")
    create_tenant.add_argument("tenant_id")
    create_key = commands.add_parser("create-key", help="a new API key for a tenant (shown once)")
    create_key.add_argument("tenant_id")
    create_key.add_argument("--create-tenant", action="store_true", help="add the tenant if new")
    create_key.add_argument("--out", type=Path, help="write the key to this file (mode 600)")
    revoke = commands.add_parser("revoke-key", help="revoke a key by its id")
    revoke.add_argument("key_id")
    list_keys = commands.add_parser("list-keys", help="a tenant's keys (ids only)")
    list_keys.add_argument("tenant_id")
    parked = commands.add_parser("parked", help="messages the mesh could not handle")
    parked_commands = parked.add_subparsers(dest="parked_command", required=True)
    parked_list = parked_commands.add_parser("list", help="parked messages not yet replayed")
    parked_list.add_argument("--all", action="store_true", help="replayed ones too")
    parked_list.add_argument("--limit", type=int, default=100)
    parked_replay = parked_commands.add_parser(
        "replay", help="publish a parked message again to its topic (through the outbox)"
    )
    parked_replay.add_argument("parked_id", type=int)
    args = parser.parse_args(list(argv))

    if args.command == "parked":
        return _parked(parked_messages, args)

    if args.command in ("create-tenant", "create-key", "list-keys"):
        problems = validate_tenant_id(args.tenant_id)
        if problems:
            print(f"tenant_id: {problems[0].description}", file=sys.stderr)
            return 2
    if args.command == "create-tenant":
        created = tenants.create_tenant(args.tenant_id)
        print(f"tenant {args.tenant_id} {'created' if created else 'already exists'}")
    elif args.command == "create-key":
        if args.create_tenant:
            tenants.create_tenant(args.tenant_id)
        key = tenants.create_key(args.tenant_id)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(key.text + "\n")
            print(f"key {key.key_id} for tenant {args.tenant_id} written to {args.out}")
        else:
            print(key.text)
    elif args.command == "revoke-key":
        revoked = tenants.revoke_key(args.key_id)
        print(f"key {args.key_id} {'revoked' if revoked else 'not found or already revoked'}")
        return 0 if revoked else 1
    elif args.command == "list-keys":
        for info in tenants.list_keys(args.tenant_id):
            state = f"revoked {info.revoked_at:%F %T}" if info.revoked_at else "active"
            print(f"{info.key_id}  created {info.created_at:%F %T}  {state}")
    return 0


def _parked(admin: ParkedMessages, args: argparse.Namespace) -> int:
    if args.parked_command == "replay":
        done = admin.replay(args.parked_id)
        outcome = "replayed" if done else "not found or already replayed"
        print(f"parked #{args.parked_id} {outcome}")
        return 0 if done else 1
    for row in admin.list(include_replayed=args.all, limit=args.limit):
        item = row.item
        where = (
            f"outbox row {item.outbox_id}"
            if item.outbox_id is not None
            else f"{item.topic}[{item.kafka_partition}]@{item.kafka_offset}"
        )
        replayed = f"  replayed {row.replayed_at:%F %T}" if row.replayed_at else ""
        print(
            f"#{row.id}  {row.parked_at:%F %T}  {item.source}  {where}  key={item.key}"
            f"  {len(item.payload)} bytes  error={item.error!r}{replayed}"
        )
    return 0
