"""`sim run --auth`: the gateway in front of every trial's staging server.

Each trial gets a token minted for it: the agent's registry grants (read and
write on every declared tool), bound to the trial id as the task, living as
long as the trial's timeout, with the trial's ``max_tool_calls`` as its budget.
The agent's MCP client is wrapped so that every ``tools/call`` goes through
`Gateway.call`: a denied call never reaches the staging server and comes back
to the agent as a failed tool result with ``agentlake/error_kind:
unauthorized``, which the recorder (`TracedSession`) puts on the trajectory as a
failed call of that kind. The stream worker counts those calls
(``unauthorized_calls``, flag ``unauthorized:<tool>``) and scores them with the
``authorized`` reward component (1 - denied / calls), which applies to
trajectories with the attribute ``auth=gateway`` (`SimAuth.attributes`, which
the runner adds to every trial's trajectory) or with a denied call. Every
decision is an `AuthDecision` event whose task is the trial id (the
trajectory's ``trial_id`` attribute). The runner knows nothing of auth beyond
its ``wrap_client`` and ``attributes`` hooks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import biscuit_auth as ba
import mcp_types as types
from mcp.shared.exceptions import MCPError

from agentlake.auth.events import AuthEvents, RecordEmitter
from agentlake.auth.gateway import DENIED_CODE, ERROR_KIND, Gateway, GatewayConfig
from agentlake.auth.policy import Grant, TokenSpec
from agentlake.auth.tokens import encode, mint
from agentlake.auth.verify import RevocationSet, Verifier
from agentlake.streams.rewards import AUTH_ATTRIBUTE

ERROR_KIND_KEY = "agentlake/error_kind"


class SimAuth:
    """Mints per-trial tokens and wraps trial clients with a gateway.

    Args:
        agent_id: the agent under test (the token's ``agent``).
        grants: what the registry grants it; no grants means every call is denied.
        emitter: where `AuthDecision` / `AuthToolInvoked` events go (None: nowhere).
        topic: logical -> physical topic names.
    """

    def __init__(
        self,
        agent_id: str,
        grants: tuple[Grant, ...],
        emitter: RecordEmitter | None = None,
        topic: Any = lambda t: t,
    ) -> None:
        self.agent_id = agent_id
        self.grants = grants
        self.key = ba.KeyPair()  # a throwaway authority: trial tokens never leave the run
        self.events = AuthEvents(emitter, topic=topic)
        self.verifier = Verifier(self.key.public_key, revocations=RevocationSet())
        self.decisions = 0
        self.denied = 0
        self.denied_tools: dict[str, int] = {}
        # on every trial's trajectory: the `authorized` reward component applies to it
        self.attributes: dict[str, str] = {AUTH_ATTRIBUTE: "gateway"}

    @classmethod
    def for_agent(cls, registry: Any, agent_id: str, version: str | None, **kw: Any) -> SimAuth:
        """Grants from the registered agent version (read and write on each declared tool)."""
        spec = registry.agent(agent_id, version) if registry is not None else None
        grants: list[Grant] = []
        for g in getattr(spec, "tools", None) or []:
            grants += [Grant(g.server, g.tool, "read"), Grant(g.server, g.tool, "write")]
        return cls(agent_id, tuple(grants), **kw)

    def token_for(self, task: str, ttl: timedelta, budget: int | None) -> str | None:
        if not self.grants:
            return None
        spec = TokenSpec(
            user="sim",
            agent=self.agent_id if _ok(self.agent_id) else "agent",
            grants=self.grants,
            expires=datetime.now(UTC) + ttl,
            task=task,
            max_depth=0,
            budget=budget,
        )
        return encode(mint(spec, self.key, 1))

    def summary(self) -> dict[str, Any]:
        """Calls through the gateway and denials, per tool (for the run report)."""
        return {"decisions": self.decisions, "denied": self.denied, "denied_tools": dict(self.denied_tools)}

    def wrap(self, trial: Any, client: Any, trajectory_id: str | None = None) -> AuthorizedClient:
        """The trial's MCP client behind a gateway (the runner's ``wrap_client`` hook); its
        decisions carry the trial id as their task and `trajectory_id`."""
        budgets = getattr(trial, "budgets", None)
        timeout = getattr(budgets, "timeout_s", None) or 300
        token = self.token_for(trial.trial_id, timedelta(seconds=float(timeout) + 60), None)
        config = GatewayConfig(trial.server or "shop", gateway_id="sim")
        gw = Gateway(client, config, self.verifier, self.events)
        return AuthorizedClient(self, gw, token, trial.trial_id, trajectory_id)


def _ok(name: str) -> bool:
    from agentlake.auth.policy import NAME_RE

    return bool(NAME_RE.match(name))


class AuthorizedClient:
    """An MCP client whose ``call_tool`` goes through the gateway; a denial is a failed tool result."""

    def __init__(
        self, owner: SimAuth, gateway: Gateway, token: str | None, task: str, trajectory_id: str | None = None
    ) -> None:
        self._owner = owner
        self._gateway = gateway
        self._token = token
        self._task = task
        self._trajectory_id = trajectory_id

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None = None, **_: Any
    ) -> types.CallToolResult:
        self._owner.decisions += 1
        try:
            return await self._gateway.call(
                self._token, name, arguments or {}, task=self._task, trajectory_id=self._trajectory_id
            )
        except MCPError as e:
            if e.code != DENIED_CODE:
                raise
            self._owner.denied += 1
            self._owner.denied_tools[name] = self._owner.denied_tools.get(name, 0) + 1
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=e.message)],
                is_error=True,
                _meta={ERROR_KIND_KEY: ERROR_KIND},
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gateway.upstream, name)
