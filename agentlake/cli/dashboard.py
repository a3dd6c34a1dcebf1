"""`agentlake dashboard` (being built)."""
