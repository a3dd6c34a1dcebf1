"""The checkpoint record of a trajectory: compact Avro, parsed once.

A record on the checkpoint topic (compacted, keyed by trajectory id) is either
the state of an *open* trajectory (its entries by seq, what its start and end
said) or a *done marker* (its end seq and when it was scored: what makes a
re-delivered event idempotent), or a tombstone (``None``) once the marker's
retention has passed.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro

from agentlake.streams.processor import (
    E_COST,
    E_ERR,
    E_FLAG,
    E_ID,
    E_INV,
    E_KEY,
    E_KIND,
    E_LAT,
    E_POS,
    E_TIN,
    E_TOOL,
    E_TOUT,
    E_TS,
    TrajState,
    event_rank,
)

_OPT_STR: list[Any] = ["null", "string"]
_OPT_LONG: list[Any] = ["null", "long"]
SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "TrajectoryCheckpoint",
    "namespace": "dev.agentlake.streams",
    "fields": [
        {"name": "tid", "type": "string"},
        {"name": "done", "type": "boolean"},
        {"name": "end_seq", "type": _OPT_LONG},
        {"name": "at_ms", "type": "long"},
        {"name": "ident", "type": {"type": "array", "items": "string"}},
        {
            "name": "started",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Started",
                    "fields": [
                        {"name": "task", "type": "string"},
                        {"name": "scenario_id", "type": _OPT_STR},
                        {"name": "run_id", "type": _OPT_STR},
                        {"name": "trial", "type": ["null", "int"]},
                        {"name": "seed", "type": _OPT_LONG},
                        {"name": "expected_tool_calls", "type": ["null", "int"]},
                        {"name": "attributes", "type": {"type": "map", "values": "string"}},
                    ],
                },
            ],
        },
        {
            "name": "end",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "End",
                    "fields": [
                        {"name": "ts_us", "type": "long"},
                        {"name": "outcome", "type": "string"},
                        {"name": "final_answer", "type": _OPT_STR},
                        {"name": "tokens_in", "type": _OPT_LONG},
                        {"name": "tokens_out", "type": _OPT_LONG},
                        {"name": "cost_usd", "type": ["null", "double"]},
                        {"name": "checks", "type": {"type": "map", "values": "boolean"}},
                        {"name": "attribution", "type": _OPT_STR},
                    ],
                },
            ],
        },
        {
            "name": "entries",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Entry",
                    "fields": [
                        {"name": "seq", "type": "long"},
                        {"name": "event_id", "type": "string"},
                        {"name": "ts_us", "type": "long"},
                        {"name": "kind", "type": "string"},
                        {"name": "tool", "type": _OPT_STR},
                        {"name": "call_key", "type": _OPT_STR},
                        {"name": "tokens_in", "type": _OPT_LONG},
                        {"name": "tokens_out", "type": _OPT_LONG},
                        {"name": "cost", "type": ["null", "double"]},
                        {"name": "latency", "type": "double"},
                        {"name": "is_error", "type": "boolean"},
                        {"name": "invalid", "type": "boolean"},
                        {"name": "flag", "type": _OPT_STR},
                        {"name": "pos", "type": "string"},
                    ],
                },
            },
        },
    ],
}
_PARSED = fastavro.parse_schema(SCHEMA)


def _write(rec: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _PARSED, rec)
    return buf.getvalue()


def encode_open(st: TrajState, at_ms: int) -> bytes:
    """The checkpoint of an open trajectory."""
    return _write(
        {
            "tid": st.tid,
            "done": False,
            "end_seq": st.end_seq,
            "at_ms": at_ms,
            "ident": list(st.ident or ()),
            "started": st.started,
            "end": st.end,
            "entries": [
                {
                    "seq": seq,
                    "event_id": e[E_ID],
                    "ts_us": e[E_TS],
                    "kind": e[E_KIND],
                    "tool": e[E_TOOL],
                    "call_key": e[E_KEY],
                    "tokens_in": e[E_TIN],
                    "tokens_out": e[E_TOUT],
                    "cost": e[E_COST],
                    "latency": e[E_LAT],
                    "is_error": e[E_ERR],
                    "invalid": e[E_INV],
                    "flag": e[E_FLAG],
                    "pos": e[E_POS],
                }
                for seq, e in st.entries.items()
            ],
        }
    )


def encode_done(tid: str, end_seq: int, at_ms: int) -> bytes:
    """A done marker: the trajectory was scored through `end_seq` at `at_ms` (wall clock, ms)."""
    rec = {"tid": tid, "done": True, "end_seq": end_seq, "at_ms": at_ms, "ident": []}
    return _write({**rec, "started": None, "end": None, "entries": []})


def decode(value: bytes) -> tuple[TrajState | None, int | None, int]:
    """(open state or None, end seq of a done marker or None, at_ms)."""
    rec = fastavro.schemaless_reader(io.BytesIO(value), _PARSED, None)
    assert isinstance(rec, dict)
    if rec["done"]:
        return None, int(rec["end_seq"]), int(rec["at_ms"])
    st = TrajState(rec["tid"])
    ident = rec["ident"]
    st.ident = (ident[0], ident[1], ident[2], ident[3]) if len(ident) == 4 else None
    st.started = rec["started"]
    st.end = rec["end"]
    st.end_seq = rec["end_seq"]
    for e in rec["entries"]:
        st.entries[e["seq"]] = (
            e["event_id"], event_rank(e["event_id"]), e["ts_us"], e["kind"], e["tool"], e["call_key"],
            e["tokens_in"], e["tokens_out"], e["cost"], e["latency"], e["is_error"], e["invalid"], e["flag"],
            e["pos"],
        )  # fmt: skip
    st._advance()
    return st, None, int(rec["at_ms"])
