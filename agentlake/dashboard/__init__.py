"""The web dashboard (`agentlake dashboard`): read-only pages over the ClickHouse projections —
runs and suites (pass^k curves, baseline comparison), reward components over time, a
paginated trajectory viewer, the context lake and the delegation graph."""

from agentlake.dashboard._app import DashboardData, check_bind, create_app

__all__ = ["DashboardData", "check_bind", "create_app"]
