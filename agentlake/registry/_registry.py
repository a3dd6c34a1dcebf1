"""The registry read model: agents and servers folded from their specs.

This module owns `Registry`, the in-memory state that applying specs (from a
file, or from ``registry.*`` events on replay) produces, and the answers the
rest of AgentLake asks of it: the latest version of an agent, and the reward
spec and tool policy (`AgentRules`) of an agent version. Pure: no I/O; snapshots
are JSON strings the caller stores where it likes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeVar

from agentlake.registry._load import RegistryError, dump_spec, spec_from_dict
from agentlake.registry._models import AgentSpec, ServerSpec, Spec, version_key
from agentlake.registry._policy import ScopePolicy
from agentlake.streams.processor import AgentRules, RulesLookup

SNAPSHOT_FORMAT = "agentlake.registry/1"
_S = TypeVar("_S", AgentSpec, ServerSpec)


class Registry:
    """Agents and MCP servers by id and version.

    Applying a spec is idempotent: the same ``id`` and ``version`` replaces the
    spec held before (last write wins), so replaying the registry's events
    rebuilds the same state. "Latest" is the highest version by `version_key`
    (PEP 440 when parseable, pre-releases included), not the last one applied.

    Args:
        specs: specs to apply, in order.
    """

    def __init__(self, specs: Iterable[Spec] = ()) -> None:
        self._agents: dict[tuple[str, str], AgentSpec] = {}
        self._servers: dict[tuple[str, str], ServerSpec] = {}
        self._rules: dict[tuple[str, str], AgentRules] = {}
        for spec in specs:
            self.apply(spec)

    def __repr__(self) -> str:
        return f"Registry({len(self._agents)} agents, {len(self._servers)} servers)"

    def apply(self, spec: Spec) -> bool:
        """Add or replace a spec.

        Args:
            spec: an agent or server spec.

        Returns:
            False when an equal spec was already held (nothing changed), else True.
        """
        key = (spec.id, spec.version)
        if isinstance(spec, AgentSpec):
            changed = self._agents.get(key) != spec
            self._agents[key] = spec
            self._rules.pop(key, None)
        elif isinstance(spec, ServerSpec):
            changed = self._servers.get(key) != spec
            self._servers[key] = spec
        else:
            raise TypeError(f"not a registry spec: {type(spec).__name__}")
        return changed

    def agents(self, agent_id: str | None = None) -> list[AgentSpec]:
        """Every agent version (or every version of ``agent_id``), by id then version, oldest first."""
        return _sorted(self._agents.values(), agent_id)

    def servers(self, server_id: str | None = None) -> list[ServerSpec]:
        """Every server version (or every version of ``server_id``), by id then version, oldest first."""
        return _sorted(self._servers.values(), server_id)

    def agent(self, agent_id: str, version: str | None = None) -> AgentSpec | None:
        """One agent version; ``version`` None means the latest. None when unknown."""
        return _pick(self._agents, agent_id, version)

    def server(self, server_id: str, version: str | None = None) -> ServerSpec | None:
        """One server version; ``version`` None means the latest. None when unknown."""
        return _pick(self._servers, server_id, version)

    def rules(self, agent_id: str, version: str) -> AgentRules:
        """The reward spec and tool policy of an agent version.

        Args:
            agent_id: the agent's id.
            version: the exact version (as events carry it).

        Returns:
            The agent's reward spec (or `DEFAULT_SPEC`) with its `ScopePolicy`; for
            an unknown agent version, ``AgentRules()``: the default spec and no policy.
        """
        key = (agent_id, version)
        rules = self._rules.get(key)
        if rules is None:
            agent = self._agents.get(key)
            if agent is None:
                return AgentRules()
            rules = self._rules[key] = AgentRules(spec=agent.reward_spec, policy=ScopePolicy(agent))
        return rules

    @property
    def rules_lookup(self) -> RulesLookup:
        """`rules` as the processor's `RulesLookup`; it sees specs applied later too."""
        return self.rules

    def to_json(self) -> str:
        """A JSON snapshot of every spec, in the order they were first applied."""
        return json.dumps(
            {
                "format": SNAPSHOT_FORMAT,
                "servers": [dump_spec(s) for s in self._servers.values()],
                "agents": [dump_spec(a) for a in self._agents.values()],
            },
            sort_keys=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Registry:
        """Rebuild a registry from `to_json`'s output.

        Args:
            text: the snapshot.

        Returns:
            A registry equal in content to the one snapshotted.

        Raises:
            RegistryError: the snapshot is not JSON, has another format, or holds an invalid spec.
        """
        source = "registry snapshot"
        try:
            data: Any = json.loads(text)
        except ValueError as e:
            raise RegistryError(source, f"not JSON: {e}") from None
        if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
            raise RegistryError(source, f"not a {SNAPSHOT_FORMAT} snapshot")
        registry = cls()
        for key, kind in (("servers", "server"), ("agents", "agent")):
            items = data.get(key, [])
            if not isinstance(items, list):
                raise RegistryError(source, "must be a list", key)
            for i, item in enumerate(items):
                try:
                    registry.apply(spec_from_dict(kind, item, source))
                except RegistryError as e:
                    path = f"{key}[{i}]" + (f".{e.path}" if e.path else "")
                    raise RegistryError(source, e.reason, path) from None
        return registry


def _sorted(specs: Iterable[_S], spec_id: str | None) -> list[_S]:
    chosen = [s for s in specs if spec_id is None or s.id == spec_id]
    return sorted(chosen, key=lambda s: (s.id, version_key(s.version)))


def _pick(specs: dict[tuple[str, str], _S], spec_id: str, version: str | None) -> _S | None:
    if version is not None:
        return specs.get((spec_id, version))
    versions = [s for (i, _), s in specs.items() if i == spec_id]
    return max(versions, key=lambda s: version_key(s.version)) if versions else None
