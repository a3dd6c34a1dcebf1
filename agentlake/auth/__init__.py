"""Agent auth: Biscuit tokens with tool-level scopes, delegation, approvals, and the MCP gateway.

The public surface:

- `Authority`: mint, attenuate, revoke and verify, emitting the delegation graph as events.
- `TokenSpec`, `Grant`, `Attenuation`, `Request`: the policy vocabulary (`agentlake.auth.policy`).
- `Verifier`, `Decision`, `Limits`, `RevocationSet`, `TaskBudgets`: one decision per call.
- `KeyRing`: authority keys by key id (rotation), agent identities, 0600 files or the environment.
- `ApprovalService`: human approval as a third-party block, its lifecycle as events.
- `Gateway`, `GatewayConfig`: the enforcing MCP proxy (in memory; `gateway_http.serve` over HTTP).
- `AuthFollower`: the revocation set and budgets, followed live from Kafka.
"""

from agentlake.auth.approval import ApprovalError, ApprovalService
from agentlake.auth.authority import Authority
from agentlake.auth.events import AuthEvents
from agentlake.auth.follow import AuthFollower
from agentlake.auth.gateway import Gateway, GatewayConfig, WithMeta
from agentlake.auth.keys import KeyRing, KeyStoreError
from agentlake.auth.policy import Attenuation, Grant, PolicyError, Request, TokenSpec
from agentlake.auth.tokens import TokenError
from agentlake.auth.verify import Decision, Limits, RevocationSet, TaskBudgets, Verifier

__all__ = [
    "ApprovalError",
    "ApprovalService",
    "Attenuation",
    "AuthEvents",
    "AuthFollower",
    "Authority",
    "Decision",
    "Gateway",
    "GatewayConfig",
    "Grant",
    "KeyRing",
    "KeyStoreError",
    "Limits",
    "PolicyError",
    "Request",
    "RevocationSet",
    "TaskBudgets",
    "TokenError",
    "TokenSpec",
    "Verifier",
    "WithMeta",
]
