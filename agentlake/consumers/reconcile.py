"""Reconciliation, an alarm: score ended trajectories the stream worker never scored.

The stream worker is correct by construction (see `agentlake.streams.engine`):
its offsets are committed only below what its acknowledged checkpoints and
outputs cover. Should a trajectory still end without a final reward, the
projections hold every event and scoring is a pure fold, so the sink rebuilds
the fold from the `events` table and publishes the final `RewardScored`
itself, byte-identical to what the worker would have sent. Every trajectory
it scores is logged as an error and counted in `agentlake status`: a non-zero
count is a bug to report, not a normal repair.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agentlake.projections.clickhouse import query
from agentlake.schemas import EVENT_TYPES, codec
from agentlake.streams.processor import Output, RewardProcessor, RulesLookup

log = logging.getLogger("agentlake.reconcile")


def unscored(client: Any, older_than_s: float, window_s: float = 86_400.0, limit: int = 500) -> list[str]:
    """Trajectories that ended between `window_s` and `older_than_s` ago, with every event
    projected and no final reward. The window keeps this a bounded scan of recent rows."""
    ended = query(
        client,
        "SELECT trajectory_id, end_seq FROM trajectories FINAL WHERE end_seq IS NOT NULL "
        "AND ended_at < now64(6) - toIntervalMillisecond({old:UInt64}) "
        "AND ended_at >= now64(6) - toIntervalMillisecond({window:UInt64}) "
        "AND trajectory_id GLOBAL NOT IN (SELECT trajectory_id FROM rewards FINAL WHERE is_final = 1 "
        "  AND scored_at >= now64(6) - toIntervalMillisecond({window:UInt64}) - INTERVAL 1 DAY) "
        "LIMIT {limit:UInt64}",
        {"old": int(older_than_s * 1000), "window": int(window_s * 1000), "limit": limit},
    )
    if not ended:
        return []
    counts = query(
        client,
        "SELECT trajectory_id, count() AS n FROM events FINAL WHERE trajectory_id IN {ids:Array(String)} "
        "GROUP BY trajectory_id",
        {"ids": [r["trajectory_id"] for r in ended]},
    )
    have = {r["trajectory_id"]: r["n"] for r in counts}
    return [r["trajectory_id"] for r in ended if have.get(r["trajectory_id"]) == r["end_seq"] + 1]


def rescore(
    client: Any, trajectory_ids: list[str], rules: RulesLookup, topic: Callable[[str], str]
) -> list[Output]:
    """The outputs (final reward, policy findings) the stream worker would have produced."""
    if not trajectory_ids:
        return []
    rows = query(
        client,
        "SELECT trajectory_id, record, body FROM events FINAL WHERE trajectory_id IN {ids:Array(String)} "
        "ORDER BY trajectory_id, seq",
        {"ids": trajectory_ids},
    )
    proc = RewardProcessor(rules, live_scores=False, topic=topic)
    c = codec()
    states: dict[str, Any] = {}
    outputs: list[Output] = []
    for r in rows:
        cls = EVENT_TYPES.get(r["record"])
        if cls is None:
            continue
        ev = cls.model_validate_json(r["body"])
        res = proc.process(
            states.get(ev.trajectory_id), topic(ev.topic), ev.trajectory_id.encode(), c.encode(ev)
        )
        if res.changed:
            states[ev.trajectory_id] = res.state
        outputs.extend(o for o in res.outputs if not o.topic.endswith(".dlq"))
    finals = [o for o in outputs if o.topic == topic("rewards.scored")]
    for tid in trajectory_ids:
        log.error(
            "reconciler: trajectory %s ended but the stream worker never scored it; scored by the sink", tid
        )
    log.error("reconciler: re-scored %d trajectories the stream worker had not scored", len(finals))
    return outputs
