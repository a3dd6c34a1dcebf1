"""The checkpoint record of a trajectory: compact Avro, parsed once.

A record on the checkpoint topic (compacted, keyed by trajectory id) is either
the state of an *open* trajectory (the fold of its settled prefix, its
remaining entries by seq, what its start and end said) or a *done marker* (its
end seq, when it was scored, and the 8-byte event-id digest of each scored seq:
what tells a re-delivered event, a no-op, from another event at a scored seq,
``duplicate_seq``), or a tombstone (``None``) once the marker's retention has
passed. A done marker carries its digests in the ``fold`` field, whose other
fields are then empty (``upto`` = end seq + 1, ``ids`` as in an open fold), so
workers that predate them still read it; a marker without them (written before)
restores with no digests: every seq up to its end then counts as a re-delivery.

Encoding: ``b"\x00\x02"`` then the Avro record (`SCHEMA`). A record without
that prefix is the first version (entries only, no fold; an Avro string comes
first, whose length byte is never 0): it is still read, so checkpoints written
before an upgrade restore.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro

from agentlake.streams.fold import (
    DIGEST_BYTES,
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
    Fold,
    digest,
)
from agentlake.streams.processor import TrajState, event_rank

_OPT_STR: list[Any] = ["null", "string"]
_OPT_LONG: list[Any] = ["null", "long"]
MAGIC = b"\x00\x02"
SCHEMA_V1: dict[str, Any] = {
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
_FOLD: dict[str, Any] = {
    "type": "record",
    "name": "Fold",
    "fields": [
        {"name": "upto", "type": "long"},
        {"name": "steps", "type": "long"},
        {"name": "tool_calls", "type": "long"},
        {"name": "errors", "type": "long"},
        {"name": "invalid", "type": "long"},
        {"name": "out_of_scope", "type": "long"},
        {"name": "unauthorized", "type": "long", "default": 0},
        {"name": "tokens_in", "type": _OPT_LONG},
        {"name": "tokens_out", "type": _OPT_LONG},
        {"name": "cost", "type": ["null", {"type": "array", "items": "double"}]},
        {"name": "latency", "type": {"type": "array", "items": "double"}},
        {"name": "first_ts", "type": _OPT_LONG},
        {"name": "last_ts", "type": _OPT_LONG},
        {"name": "tool_names", "type": {"type": "array", "items": "string"}},
        {"name": "tool_seq", "type": {"type": "array", "items": "int"}},  # indexes into tool_names
        {"name": "keys", "type": "bytes"},  # sorted 8-byte call-key digests
        {"name": "flags", "type": {"type": "array", "items": "string"}},
        {"name": "ids", "type": "bytes"},  # event-id digests of seqs [upto - len/8, upto)
    ],
}


def _v2(v1: dict[str, Any]) -> dict[str, Any]:
    fields = [dict(f) for f in v1["fields"]]
    entries = next(f for f in fields if f["name"] == "entries")
    item = dict(entries["type"]["items"], name="Entry2")
    item["fields"] = [
        {"name": "call_key", "type": ["null", "bytes"]} if f["name"] == "call_key" else f
        for f in item["fields"]
    ]
    entries["type"] = {"type": "array", "items": item}
    fields.insert(fields.index(entries), {"name": "fold", "type": ["null", _FOLD]})
    return {**v1, "name": "TrajectoryCheckpoint2", "fields": fields}


SCHEMA = _v2(SCHEMA_V1)
_PARSED = fastavro.parse_schema(SCHEMA)
_PARSED_V1 = fastavro.parse_schema(SCHEMA_V1)


def _write(rec: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(MAGIC)
    fastavro.schemaless_writer(buf, _PARSED, rec)
    return buf.getvalue()


def _fold_record(f: Fold) -> dict[str, Any] | None:
    if f.upto == 0:
        return None
    index: dict[str, int] = {}
    seq = [index.setdefault(t, len(index)) for t in f.tools]
    return {
        "upto": f.upto,
        "steps": f.steps,
        "tool_calls": f.tool_calls,
        "errors": f.errors,
        "invalid": f.invalid,
        "out_of_scope": f.out_of_scope,
        "unauthorized": f.unauthorized,
        "tokens_in": f.tin,
        "tokens_out": f.tout,
        "cost": f.cost,
        "latency": f.lat,
        "first_ts": f.first_ts,
        "last_ts": f.last_ts,
        "tool_names": list(index),
        "tool_seq": seq,
        "keys": b"".join(sorted(f.keys)),
        "flags": sorted(f.flags),
        "ids": bytes(f.ids),
    }


def _fold(rec: dict[str, Any] | None) -> Fold:
    f = Fold()
    if rec is None:
        return f
    f.upto, f.steps, f.tool_calls = rec["upto"], rec["steps"], rec["tool_calls"]
    f.errors, f.invalid, f.out_of_scope = rec["errors"], rec["invalid"], rec["out_of_scope"]
    f.unauthorized = rec.get("unauthorized", 0)
    f.tin, f.tout, f.cost, f.lat = rec["tokens_in"], rec["tokens_out"], rec["cost"], rec["latency"]
    f.first_ts, f.last_ts = rec["first_ts"], rec["last_ts"]
    names = rec["tool_names"]
    f.tools = [names[i] for i in rec["tool_seq"]]
    for t in f.tools:
        f.made[t] = f.made.get(t, 0) + 1
    keys = rec["keys"]
    f.keys = {keys[i : i + DIGEST_BYTES] for i in range(0, len(keys), DIGEST_BYTES)}
    f.flags = set(rec["flags"])
    f.ids = bytearray(rec["ids"])
    return f


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
            "fold": _fold_record(st.fold),
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


def encode_done(tid: str, end_seq: int, at_ms: int, ids: bytes = b"") -> bytes:
    """A done marker: the trajectory was scored through `end_seq` at `at_ms` (wall clock, ms);
    `ids`: the scored event-id digests of seqs ``[end_seq + 1 - len(ids) / 8, end_seq]``
    (`agentlake.streams.fold.seq_digests`; 8 bytes per seq, the marker's only part that grows)."""
    fold = None if not ids else {**_EMPTY_FOLD, "upto": end_seq + 1, "ids": ids}
    return _write(
        {
            "tid": tid,
            "done": True,
            "end_seq": end_seq,
            "at_ms": at_ms,
            "ident": [],
            "started": None,
            "end": None,
            "fold": fold,
            "entries": [],
        }
    )


# a done marker's fold: only `upto` and the digests (`ids`) are set
_EMPTY_FOLD: dict[str, object] = {
    "steps": 0,
    "tool_calls": 0,
    "errors": 0,
    "invalid": 0,
    "out_of_scope": 0,
    "unauthorized": 0,
    "tokens_in": None,
    "tokens_out": None,
    "cost": None,
    "latency": [],
    "first_ts": None,
    "last_ts": None,
    "tool_names": [],
    "tool_seq": [],
    "keys": b"",
    "flags": [],
}


def decode(value: bytes) -> tuple[TrajState | None, int | None, int]:
    """(open state or None, end seq of a done marker or None, at_ms)."""
    st, done, at_ms = read(value)
    return st, None if done is None else done[0], at_ms


def read(value: bytes) -> tuple[TrajState | None, tuple[int, bytes] | None, int]:
    """(open state or None, (end seq, scored digests as in `encode_done`) of a done marker or None,
    at_ms). Reads every version written so far."""
    v2 = value[:2] == MAGIC
    buf = io.BytesIO(value)
    if v2:
        buf.seek(2)
    rec = fastavro.schemaless_reader(buf, _PARSED if v2 else _PARSED_V1, None)
    assert isinstance(rec, dict)
    if rec["done"]:
        end_seq, fold = int(rec["end_seq"]), rec.get("fold")
        ids = bytes(fold["ids"]) if fold is not None and fold["upto"] == end_seq + 1 else b""
        return None, (end_seq, ids), int(rec["at_ms"])
    st = TrajState(rec["tid"])
    ident = rec["ident"]
    st.ident = (ident[0], ident[1], ident[2], ident[3]) if len(ident) == 4 else None
    st.started = rec["started"]
    st.end = rec["end"]
    st.end_seq = rec["end_seq"]
    st.fold = _fold(rec.get("fold"))
    st.contiguous = st.fold.upto
    for e in rec["entries"]:
        key = e["call_key"]
        st.entries[e["seq"]] = (
            e["event_id"], event_rank(e["event_id"]), e["ts_us"], e["kind"], e["tool"],
            digest(key) if isinstance(key, str) else key,
            e["tokens_in"], e["tokens_out"], e["cost"], e["latency"], e["is_error"], e["invalid"], e["flag"],
            e["pos"],
        )  # fmt: skip
    st._advance()
    return st, None, int(rec["at_ms"])
