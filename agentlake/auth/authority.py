"""The Python API: mint, attenuate, revoke and verify, with every step on the log.

from agentlake.auth import Authority, Grant, TokenSpec, Attenuation, Request

auth = Authority.local(settings)                      # keys under $AGENTLAKE_HOME/auth/keys
token = auth.mint(TokenSpec("alice", "support-bot", (Grant("shop", "get_order"),), expires))
sub = auth.attenuate(token, Attenuation(delegate="lookup-bot", tools=(("shop", "get_order"),)))
auth.verify(sub, Request("shop", "get_order", "read", "orders/42", task="t-1")).allowed
auth.revoke(token)                                     # sub is revoked with it
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import biscuit_auth as ba

from agentlake.auth.events import ATTENUATED, ISSUED, AuthEvents
from agentlake.auth.keys import KeyRing
from agentlake.auth.policy import Attenuation, Request, TokenSpec
from agentlake.auth.tokens import TokenError, attenuate, describe, encode, mint, parse
from agentlake.auth.verify import DEFAULT_LIMITS, Decision, Limits, RevocationSet, TaskBudgets, Verifier
from agentlake.topics import AUTH_DELEGATIONS


def _us(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1_000_000)


class Authority:
    """Issues and verifies tokens for one key ring, emitting the delegation graph as events.

    Args:
        keys: the key ring (authority keys by key id).
        events: where issued / attenuated / revoked events go.
        revocations: the revocation set `verify` consults (shared with a follower).
    """

    def __init__(
        self,
        keys: KeyRing,
        events: AuthEvents | None = None,
        revocations: RevocationSet | None = None,
        budgets: TaskBudgets | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.keys = keys
        self.events = events or AuthEvents()
        self.revocations = revocations if revocations is not None else RevocationSet()
        self.verifier = Verifier(
            self.root_key, revocations=self.revocations, budgets=budgets, limits=limits or DEFAULT_LIMITS
        )

    def root_key(self, kid: int | None) -> ba.PublicKey:
        """The root public key for a token's key id (the provider `Biscuit.from_base64` calls)."""
        return self.keys.public_key(kid)

    def parse(self, token: str | ba.Biscuit) -> ba.Biscuit:
        return token if isinstance(token, ba.Biscuit) else parse(token, self.root_key)

    def mint(self, spec: TokenSpec) -> str:
        """Mint a token (base64) signed with the current authority key; emits `AuthTokenIssued`."""
        kid = self.keys.current_id()
        token = mint(spec, self.keys.authority(kid), kid)
        rid = token.revocation_ids[0]
        self.events.emit(
            AUTH_DELEGATIONS,
            rid,
            ISSUED,
            {
                "revocation_id": rid,
                "root_key_id": kid,
                "user_id": spec.user,
                "agent_id": spec.agent,
                "task_id": spec.task,
                "servers": list(spec.servers),
                "rights_json": json.dumps(
                    sorted([g.server, g.tool, g.operation] for g in spec.grants), separators=(",", ":")
                ),
                "resources": list(spec.resources),
                "approval_tools": list(spec.approval_tools),
                "expires_us": _us(spec.expires),
                "max_depth": spec.max_depth,
                "budget": spec.budget,
                "block_source": token.block_source(0),
            },
        )
        return encode(token)

    def attenuate(self, token: str | ba.Biscuit, att: Attenuation) -> str:
        """Append a narrowing block (verifying the parent first); emits `AuthTokenAttenuated`."""
        parent = self.parse(token)
        child = attenuate(parent, att)
        ids = child.revocation_ids
        info = describe(child)
        self.events.emit(
            AUTH_DELEGATIONS,
            ids[-1],
            ATTENUATED,
            {
                "revocation_id": ids[-1],
                "parent_revocation_id": ids[-2],
                "token_id": ids[0],
                "depth": info.depth,
                "delegate": att.delegate,
                "tools_json": None if att.tools is None else json.dumps([list(t) for t in att.tools]),
                "operations": None if att.operations is None else ",".join(att.operations),
                "resources": list(att.resources),
                "expires_us": _us(att.expires),
                "task_id": att.task,
                "block_source": child.block_source(len(ids) - 1),
            },
        )
        return encode(child)

    def revoke(self, token_or_id: str, reason: str = "revoked", by: str | None = None) -> str:
        """Revoke a token (its last block, hence everything attenuated from it) or a revocation id.

        Returns the revoked revocation id. Emits `AuthRevoked` on the compacted topic.
        """
        rid: str
        token_id: str | None = None
        if len(token_or_id) == 128 and all(c in "0123456789abcdef" for c in token_or_id.lower()):
            rid = token_or_id.lower()
        else:
            t = self.parse(token_or_id)
            ids = t.revocation_ids
            rid, token_id = ids[-1], ids[0]
        self.events.revoked(rid, reason, by, token_id)
        self.revocations.add(rid)
        return rid

    def verify(self, token: str | ba.Biscuit | None, request: Request) -> Decision:
        """Authorize `request` with `token` (the same path the gateway and the CLI use)."""
        return self.verifier.authorize(token, request)

    def publish_keys(self) -> int:
        """Publish every authority public key (`AuthKeyPublished`). Returns the count."""
        now = int(datetime.now(UTC).timestamp() * 1e6)
        keys = self.keys.published(now)
        for k in keys:
            self.events.key_published(k.key_id, k.owner, k.kind, k.public_key, k.created_us)
        return len(keys)


__all__ = ["Authority", "TokenError"]
