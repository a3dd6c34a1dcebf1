"""`agentlake token`: mint, attenuate, inspect, verify and revoke Biscuit tokens."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from agentlake.cli._app import JSON_OPT, UserError, _print_json, _settings, app, console, out

token_app = typer.Typer(
    help="Biscuit tokens for agents: tool-level scopes, delegation, revocation.", no_args_is_help=True
)
app.add_typer(token_app, name="token")

TOKEN_ARG = typer.Argument(..., help="the token (base64), '-' for stdin, or @FILE")
OFFLINE_OPT = typer.Option(False, "--offline", help="do not touch Kafka (no events, no revocation list)")


def read_token(value: str) -> str:
    """A token argument: literal, '-' (stdin) or @FILE."""
    if value == "-":
        value = sys.stdin.read()
    elif value.startswith("@"):
        path = Path(value[1:])
        try:
            value = path.read_text()
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror}") from e
    value = value.strip()
    if not value:
        raise UserError("empty token")
    return value


def parse_ttl(text: str) -> timedelta:
    """A ``--ttl`` value (``15m``, ``2h``): 1 s up to `MAX_TOKEN_TTL`, else a `UserError`."""
    from agentlake.auth.policy import MAX_TOKEN_TTL
    from agentlake.auth.replay import parse_since

    try:
        life = parse_since(text, maximum=MAX_TOKEN_TTL)
    except ValueError as e:
        raise UserError(f"--ttl: {e}") from e
    if life < timedelta(seconds=1):
        raise UserError(f"--ttl: duration {text!r} is too short: at least 1s")
    return life


def default_ttl(seconds: int) -> timedelta:
    """AGENTLAKE_AUTH_TOKEN_TTL_S as a lifetime, refused beyond `MAX_TOKEN_TTL`."""
    from agentlake.auth.policy import MAX_TOKEN_TTL
    from agentlake.auth.replay import format_duration

    if seconds > MAX_TOKEN_TTL.total_seconds():
        raise UserError(
            f"bad setting AGENTLAKE_AUTH_TOKEN_TTL_S={seconds}: a token lives at most "
            f"{int(MAX_TOKEN_TTL.total_seconds())} ({format_duration(MAX_TOKEN_TTL)}); lower it or pass --ttl"
        )
    return timedelta(seconds=seconds)


@contextmanager
def authority(offline: bool, revocations: bool = False, acked: str | None = None) -> Iterator[Any]:
    """An `Authority` over the data dir's keys; events go to Kafka unless offline.

    With `acked` (what the events record, named in the error), they are published when
    the block ends and the brokers must acknowledge them (acks=all): nothing is spilled
    for later, a failure is a `UserError` (a revocation reported done must be on the log). Otherwise events
    go through the SDK emitter, which spills them when Kafka is unreachable.
    """
    from agentlake.auth.authority import Authority
    from agentlake.auth.events import AuthEvents, RecordBuffer
    from agentlake.auth.keys import KeyStoreError, keyring_for
    from agentlake.auth.verify import Limits

    s = _settings()
    # the list first: a Kafka that does not answer fails here, before anything is emitted
    revoked = asyncio.run(read_revocations(s)) if revocations and not offline else []
    emitter: Any = None
    buffer = RecordBuffer() if acked and not offline else None
    if buffer is not None:
        emitter = buffer
    elif not offline:
        from agentlake.sdk import KafkaEmitter

        emitter = KafkaEmitter(s.bootstrap_servers, s.spill_dir, client_id="agentlake-auth")
    try:
        auth = Authority(
            keyring_for(s),
            AuthEvents(emitter, topic=s.topic, keep=True),
            limits=Limits(max_time_ms=s.auth_max_time_ms),
        )
        for rid in revoked:
            auth.revocations.add(rid)
        yield auth
        if buffer is not None and buffer.records:
            publish_acked(s, buffer.records, acked or "events")
    except KeyStoreError as e:
        raise UserError(str(e)) from e
    finally:
        if emitter is not None and buffer is None:
            emitter.close(timeout=10)


def publish_acked(s: Any, records: list[tuple[str, bytes, bytes]], what: str, timeout: float = 15.0) -> None:
    """Publish `records` and wait for the brokers' acknowledgement; `UserError` if they do not."""
    from agentlake.kafka_io import produce_acked

    try:
        asyncio.run(produce_acked(s, records, timeout=timeout))
    except Exception as e:
        name, text = type(e).__name__, str(e).strip()
        why = text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
        raise UserError(
            f"{what} NOT recorded (nothing changed): Kafka at {s.bootstrap_servers} "
            f"did not acknowledge it ({why}); "
            "retry when Kafka is up (`agentlake status`)"
        ) from e


async def read_revocations(settings: Any) -> list[str]:
    """Every revoked revocation id on the compacted topic."""
    from agentlake.auth.events import REVOKED, decode
    from agentlake.kafka_io import read_to_end
    from agentlake.schemas import DecodeError
    from agentlake.topics import AUTH_REVOCATIONS

    try:
        records = await read_to_end(settings, [settings.topic(AUTH_REVOCATIONS)], timeout=10)
    except Exception as e:
        raise UserError(f"cannot read {AUTH_REVOCATIONS} from Kafka ({e}); pass --offline to skip it") from e
    ids = []
    for m in records:
        try:
            record, data = decode(m.value) if m.value else ("", {})
        except DecodeError:
            continue
        if record == REVOKED:
            ids.append(data["revocation_id"])
    return ids


def show_token(info: Any, token: str | None = None, why: str | None = None) -> None:
    """Readable blocks: index, revocation id, third-party signer, Datalog (`why`: why the
    signature was not verified)."""
    kid = "?" if info.root_key_id is None else info.root_key_id
    state = "signature verified" if info.verified else f"NOT verified: {why or 'no matching root key'}"
    console.print(
        f"token {info.token_id[:16]}…  root key id {kid}  depth {info.depth}  {state}",
        highlight=False,
        soft_wrap=True,
    )
    for b in info.blocks:
        kind = (
            "authority" if b.index == 0 else ("approval (third party)" if b.external_key else "attenuation")
        )
        console.print(
            f"\n[bold]block {b.index}[/] {kind}  revocation id {b.revocation_id}",
            highlight=False,
            soft_wrap=True,
        )
        if b.external_key:
            console.print(f"  signed by {b.external_key}", highlight=False)
        for line in b.source.strip().splitlines():
            console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    if token is not None:
        out.print(token, soft_wrap=True, highlight=False)


def _grants(values: list[str]) -> tuple[Any, ...]:
    from agentlake.auth.policy import Grant, PolicyError

    try:
        return tuple(Grant.parse(v) for v in values)
    except PolicyError as e:
        raise UserError(str(e)) from e


@token_app.command("mint")
def token_mint(
    user: str = typer.Option(..., help="the human principal the agent acts for"),
    agent: str = typer.Option(..., help="the agent the token is issued to"),
    grant: list[str] = typer.Option(..., help="SERVER:TOOL[:read|write] (TOOL may be *); repeat"),
    task: str | None = typer.Option(None, help="bind the token to one task id"),
    ttl: str = typer.Option("", help="lifetime, e.g. 15m, 2h (default AGENTLAKE_AUTH_TOKEN_TTL_S)"),
    max_depth: int = typer.Option(2, min=0, help="delegation hops allowed below this token"),
    budget: int | None = typer.Option(None, min=1, help="at most N tool calls for the task"),
    resource: list[str] = typer.Option([], help="resource glob the calls must match (orders/*); repeat"),
    approval: list[str] = typer.Option([], help="tool that needs a human approval block; repeat"),
    offline: bool = OFFLINE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Mint a token signed by the current authority key (emits AuthTokenIssued)."""
    from agentlake.auth.policy import PolicyError, TokenSpec
    from agentlake.auth.tokens import describe

    s = _settings()
    life = parse_ttl(ttl) if ttl else default_ttl(s.auth_token_ttl_s)
    with authority(offline) as auth:
        try:
            spec = TokenSpec(
                user=user,
                agent=agent,
                grants=_grants(grant),
                expires=datetime.now(UTC) + life,
                task=task,
                max_depth=max_depth,
                budget=budget,
                resources=tuple(resource),
                approval_tools=tuple(approval),
                approver_key=str(auth.keys.approver().public_key) if approval else None,
            )
        except PolicyError as e:
            raise UserError(str(e)) from e
        token = auth.mint(spec)
        info = describe(auth.parse(token), auth.keys.current_id())
    if as_json:
        _print_json({"token": token, **info.to_json(), "expires": spec.expires.isoformat()})
    else:
        show_token(info, token)


@token_app.command("attenuate")
def token_attenuate(
    token: str = TOKEN_ARG,
    delegate: str | None = typer.Option(None, help="the agent the narrowed token is handed to"),
    tool: list[str] = typer.Option([], help="SERVER:TOOL the holder may still call; repeat"),
    operation: list[str] = typer.Option([], help="read and/or write; repeat"),
    server: list[str] = typer.Option([], help="narrow the audience to these servers; repeat"),
    resource: list[str] = typer.Option([], help="resource glob; repeat"),
    ttl: str = typer.Option("", help="an earlier expiry, e.g. 5m (never extends the parent's)"),
    task: str | None = typer.Option(None, help="bind to one task id"),
    offline: bool = OFFLINE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Append a block that narrows the token, offline (emits AuthTokenAttenuated)."""
    from agentlake.auth.policy import Attenuation, PolicyError, beyond_parent
    from agentlake.auth.tokens import TokenError, describe, root_key_id_of
    from agentlake.auth.verify import granted_rights

    tools = []
    for t in tool:
        srv, sep, name = t.partition(":")
        if not sep or not srv or not name:
            raise UserError(f"bad --tool {t!r}: expected SERVER:TOOL")
        tools.append((srv, name))
    try:
        att = Attenuation(
            delegate=delegate,
            tools=tuple(tools) or None,
            operations=tuple(operation) or None,
            servers=tuple(server) or None,
            resources=tuple(resource),
            expires=datetime.now(UTC) + parse_ttl(ttl) if ttl else None,
            task=task,
        )
    except PolicyError as e:
        raise UserError(str(e)) from e
    with authority(offline) as auth:
        raw = read_token(token)
        try:
            parent = auth.parse(raw)
            rights = granted_rights(parent)
            missing = beyond_parent(att, rights)
            if missing:
                granted = ", ".join(f"{s}:{t}:{o}" for s, t, o in sorted(rights))
                raise UserError(
                    f"the parent token does not grant {', '.join(missing)} (it grants {granted}): "
                    "an attenuation can only narrow; name what the parent grants"
                )
            child = auth.attenuate(parent, att)
        except (TokenError, PolicyError) as e:
            raise UserError(str(e)) from e
        info = describe(auth.parse(child), root_key_id_of(raw))
    if as_json:
        _print_json({"token": child, **info.to_json()})
    else:
        show_token(info, child)


@token_app.command("inspect")
def token_inspect(token: str = TOKEN_ARG, as_json: bool = JSON_OPT) -> None:
    """Show the blocks, their Datalog and revocation ids (verifies the signature when the key is here)."""
    from agentlake.auth.keys import KeyStoreError, keyring_for
    from agentlake.auth.tokens import TokenError, describe, parse, parse_unverified

    raw = read_token(token)
    keys = keyring_for(_settings())
    try:
        unverified = parse_unverified(raw)
        kid = unverified.root_key_id()
        why = None
        try:
            root = keys.public_key(kid)
        except KeyStoreError:
            why = f"no root key with id {'?' if kid is None else kid} here"
        else:
            try:
                info = describe(parse(raw, root), kid)
            except TokenError:
                why = f"bad signature for root key {kid} (the token was altered, or signed by another key)"
        if why is not None:
            info = describe(unverified)
    except TokenError as e:
        raise UserError(str(e)) from e
    if as_json:
        _print_json({**info.to_json(), "not_verified_because": why})
    else:
        show_token(info, why=why)


def _parseable(raw: str) -> None:
    """A token that is not a Biscuit at all (truncated, garbage) is a usage error, exit 2;
    a well-formed token that is denied (bad signature, expired, revoked) is exit 1."""
    from agentlake.auth.tokens import TokenError, parse_unverified

    body = raw[len("bearer ") :] if raw.lower().startswith("bearer ") else raw
    try:
        parse_unverified(body)
    except TokenError as e:
        raise UserError(str(e)) from e


@token_app.command("verify")
def token_verify(
    token: str = TOKEN_ARG,
    server: str = typer.Option(..., help="the MCP server called"),
    tool: str = typer.Option(..., help="the tool called"),
    operation: str = typer.Option("read", help="read | write"),
    task: str = typer.Option("", help="the task id of the call"),
    arg: list[str] = typer.Option([], help="call argument NAME=VALUE (JSON value or string); repeat"),
    resource: str | None = typer.Option(None, help="resource (default SERVER/TOOL)"),
    offline: bool = OFFLINE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Authorize one call offline, through the gateway's own path.

    Exit 0 allowed, 1 denied, 2 for a token that cannot be parsed at all."""
    from agentlake.auth.policy import OPERATIONS, Request, derive_resource

    if operation not in OPERATIONS:
        raise UserError(f"bad --operation {operation!r}: expected {' or '.join(OPERATIONS)}")
    args: dict[str, Any] = {}
    for a in arg:
        k, sep, v = a.partition("=")
        if not sep or not k:
            raise UserError(f"bad --arg {a!r}: expected NAME=VALUE")
        try:
            args[k] = json.loads(v)
        except ValueError:
            args[k] = v
    req = Request(server, tool, operation, resource or derive_resource(server, tool, args, None), task, args)
    raw = read_token(token)
    _parseable(raw)
    with authority(offline, revocations=True) as auth:
        decision = auth.verify(raw, req)
    if as_json:
        _print_json(
            {
                "allowed": decision.allowed,
                "reason": decision.reason,
                "failed_check": decision.failed_check,
                "revocation_ids": list(decision.revocation_ids),
                "agent": decision.agent,
                "user": decision.user,
                "depth": decision.depth,
            }
        )
    elif decision.allowed:
        console.print(
            f"[green]allowed[/]: {decision.agent} for {decision.user} may call {server}/{tool}",
            soft_wrap=True,
        )
    else:
        why = "" if decision.reason == "denied" else f" ({decision.reason})"
        console.print(f"[red]denied[/]{why}: {decision.failed_check}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if decision.allowed else 1)


@token_app.command("revoke")
def token_revoke(
    token: str = typer.Argument(
        ..., help="a token (revokes its last block) or a revocation id; '-' or @FILE"
    ),
    reason: str = typer.Option("revoked", help="recorded with the revocation"),
    as_json: bool = JSON_OPT,
) -> None:
    """Revoke a token and everything attenuated from it (AuthRevoked on the compacted topic)."""
    import getpass

    from agentlake.auth.tokens import TokenError

    with authority(False, acked="revocation") as auth:
        try:
            rid = auth.revoke(read_token(token), reason=reason, by=getpass.getuser())
        except TokenError as e:
            raise UserError(str(e)) from e
    if as_json:
        _print_json({"revoked": rid, "reason": reason})
    else:
        console.print(f"revoked {rid}", highlight=False)


@token_app.command("keys")
def token_keys(
    rotate: bool = typer.Option(False, help="create a new authority key and make it current"),
    publish: bool = typer.Option(False, help="publish the public keys (AuthKeyPublished on registry.keys)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Authority keys by key id (the current one signs new tokens)."""
    with authority(not publish, acked="key publication") as auth:
        if rotate:
            auth.keys.rotate()
        current = auth.keys.current_id()
        rows = [
            {"key_id": k, "public_key": str(auth.keys.authority(k).public_key), "current": k == current}
            for k in auth.keys.authority_ids()
        ]
        if publish:
            auth.publish_keys()
    if as_json:
        _print_json(rows)
    else:
        for r in rows:
            console.print(f"{r['key_id']:>4}  {r['public_key']}{'  (current)' if r['current'] else ''}")
