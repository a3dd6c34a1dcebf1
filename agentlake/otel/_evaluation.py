"""Reward scores -> OpenTelemetry ``gen_ai.evaluation.result`` events (OTLP logs).

One event per reward component and one for the weighted total, parented to the
trajectory's trace (and its root span when known), so a trace viewer shows the
scores next to the spans. Attributes follow the GenAI semantic conventions:
``gen_ai.evaluation.name``, ``gen_ai.evaluation.score.value``,
``gen_ai.evaluation.score.label`` (``pass`` / ``fail``) and
``gen_ai.evaluation.explanation``.

Source: https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-events/
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

EVENT_NAME = "gen_ai.evaluation.result"


def _kv(key: str, value: Any) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    if isinstance(value, bool):
        v = AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = AnyValue(int_value=value)
    elif isinstance(value, float):
        v = AnyValue(double_value=value)
    else:
        v = AnyValue(string_value=str(value))
    return KeyValue(key=key, value=v)


def evaluation_records(reward: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluation events of one final reward, as plain dicts (name, value, label, explanation).

    Args:
        reward: a ``rewards`` row: ``total``, ``success``, ``components``, ``gates``, ``failed_gates``.
    """
    failed = set(reward.get("failed_gates") or [])
    gates = set(reward.get("gates") or [])
    out = [
        {
            "name": "agentlake.reward.total",
            "value": float(reward["total"]),
            "label": "pass" if reward.get("success") else "fail",
            "explanation": ("failed gates: " + ", ".join(sorted(failed))) if failed else "all gates passed",
        }
    ]
    for name, value in sorted(dict(reward.get("components") or {}).items()):
        label = ("fail" if name in failed else "pass") if name in gates else None
        out.append(
            {"name": f"agentlake.reward.{name}", "value": float(value), "label": label, "explanation": None}
        )
    return out


def evaluation_request(rewards: Iterable[dict[str, Any]], service_name: str = "agentlake") -> Any:
    """An OTLP `ExportLogsServiceRequest` carrying ``gen_ai.evaluation.result`` events.

    Args:
        rewards: final ``rewards`` rows, each with ``trace_id`` (32 hex) and optionally
            ``span_id`` (16 hex, the trajectory's root span), ``trajectory_id``,
            ``agent_id``, ``agent_version`` and ``scored_at_ns``.
        service_name: the ``service.name`` resource attribute.
    """
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(_kv("service.name", service_name))
    sl = rl.scope_logs.add()
    sl.scope.name = "agentlake.rewards"
    for r in rewards:
        trace = bytes.fromhex(r["trace_id"]) if len(r.get("trace_id") or "") == 32 else b""
        span = bytes.fromhex(r["span_id"]) if len(r.get("span_id") or "") == 16 else b""
        for ev in evaluation_records(r):
            rec = LogRecord(
                time_unix_nano=int(r.get("scored_at_ns") or 0),
                observed_time_unix_nano=int(r.get("scored_at_ns") or 0),
                event_name=EVENT_NAME,
                trace_id=trace,
                span_id=span,
            )
            rec.attributes.append(_kv("event.name", EVENT_NAME))
            rec.attributes.append(_kv("gen_ai.evaluation.name", ev["name"]))
            rec.attributes.append(_kv("gen_ai.evaluation.score.value", ev["value"]))
            if ev["label"]:
                rec.attributes.append(_kv("gen_ai.evaluation.score.label", ev["label"]))
            if ev["explanation"]:
                rec.attributes.append(_kv("gen_ai.evaluation.explanation", ev["explanation"]))
            for key in ("trajectory_id", "agent_id", "agent_version", "run_id", "scenario_id"):
                if r.get(key):
                    rec.attributes.append(_kv(f"agentlake.{key}", r[key]))
            sl.log_records.append(rec)
    return req


def read_final_rewards(
    client: Any, *, run_id: str | None = None, limit: int = 10_000
) -> list[dict[str, Any]]:
    """Final rewards with their trace and root span ids (ClickHouse; newest first)."""
    from agentlake.projections.clickhouse import query

    where = "r.is_final = 1" + (" AND r.run_id = {run:String}" if run_id else "")
    return query(
        client,
        f"""SELECT r.trajectory_id AS trajectory_id, r.agent_id AS agent_id, r.agent_version AS agent_version,
                   r.run_id AS run_id, r.scenario_id AS scenario_id, r.total AS total, r.success AS success,
                   r.components AS components, r.gates AS gates, r.failed_gates AS failed_gates,
                   toUnixTimestamp64Nano(r.scored_at) AS scored_at_ns,
                   e.trace_id AS trace_id, e.span_id AS span_id
            FROM (SELECT * FROM rewards FINAL WHERE is_final = 1) AS r
            GLOBAL LEFT JOIN (SELECT trajectory_id, trace_id, span_id FROM events FINAL
                       WHERE record = 'TrajectoryStarted') AS e ON e.trajectory_id = r.trajectory_id
            WHERE {where} ORDER BY r.scored_at DESC LIMIT {{limit:UInt32}}""",
        {"run": run_id or "", "limit": limit},
    )
