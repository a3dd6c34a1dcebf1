"""The agent and MCP-server registry: specs, registry files, tool policies, the read model.

`load_registry_file` reads a YAML file into `AgentSpec`/`ServerSpec` values,
`Registry` folds specs into the state the stream processors query
(`Registry.rules_lookup`), and `ScopePolicy` judges a tool call against an
agent's grants. Everything but reading the file is pure.
"""

from agentlake.registry._load import (
    RegistryError,
    dump_spec,
    load_registry_file,
    parse_registry,
    spec_from_dict,
    spec_kind,
)
from agentlake.registry._models import (
    AgentSpec,
    ArgConstraint,
    ServerSpec,
    Spec,
    SpecKind,
    ToolGrant,
    ToolSpec,
    version_key,
)
from agentlake.registry._policy import OUT_OF_SCOPE, UNDECLARED_TOOL, ScopePolicy
from agentlake.registry._registry import Registry
from agentlake.registry._store import (
    RegistryFollower,
    apply_specs,
    decode_spec,
    encode_spec,
    read_registry,
    rules_lookup,
)

__all__ = [
    "OUT_OF_SCOPE",
    "UNDECLARED_TOOL",
    "AgentSpec",
    "ArgConstraint",
    "Registry",
    "RegistryError",
    "RegistryFollower",
    "ScopePolicy",
    "ServerSpec",
    "Spec",
    "SpecKind",
    "ToolGrant",
    "ToolSpec",
    "apply_specs",
    "decode_spec",
    "dump_spec",
    "encode_spec",
    "load_registry_file",
    "parse_registry",
    "read_registry",
    "rules_lookup",
    "spec_from_dict",
    "spec_kind",
    "version_key",
]
