"""Agent auth: Biscuit tokens with tool-level scopes, delegation, approvals, the MCP gateway."""
