"""Enterprise documents end to end: files, Parquet and a Delta table through lake.documents into Milvus.

Real broker (the session stack), real milvus-lite file, the real `agentlake` command.
The documents get their own milvus-lite file (``AGENTLAKE_MILVUS_URI``; pymilvus
itself reads ``MILVUS_URI`` and wants a URL there): milvus-lite is one process per
file, and other tests of the session open the default one in-process.
The real command runs as a subprocess for the bad-input checks and the first
ingest; later calls run in this process (Typer's runner), which then owns the file.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentlake.settings import Settings


@pytest.fixture(scope="module")
def docs_env(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("lake-docs")
    return {"AGENTLAKE_MILVUS_URI": str(folder / "documents.db")}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    kb = root / "kb"
    (kb / "policies").mkdir(parents=True)
    (kb / "policies" / "refunds.md").write_text(
        "# Refund policy\n\nDamaged goods are refunded within 30 days of delivery.\n\n"
        "Send a photo of the damage with the order number.\n"
    )
    (kb / "shipping.txt").write_text("Standard shipping takes three business days.")
    (kb / "hr.json").write_text(
        json.dumps(
            [{"id": "salaries", "text": "Salary bands for engineering, L3 to L7.", "access": ["group:hr"]}]
        )
    )
    pq.write_table(
        pa.table(
            {
                "id": ["p1", "p2"],
                "text": ["Globex refunds only unopened items.", "Globex ships worldwide."],
                "region": ["eu", "us"],
            }
        ),
        root / "globex.parquet",
    )
    return root


def agentlake(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentlake", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
    )


def cli(*args: str, env: dict[str, str]) -> Any:
    """`agentlake ARGS --json` in this process (Typer's runner); returns the parsed JSON."""
    from typer.testing import CliRunner

    from agentlake.cli import app

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        r = CliRunner().invoke(app, [*args, "--json"])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def ingest(source: str, path: Path, tenant: str, env: dict[str, str]) -> dict[str, Any]:
    report: dict[str, Any] = cli("lake", "ingest", "--source", source, str(path), "--tenant", tenant, env=env)
    return report


async def _end_offsets(settings: Settings, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer

    from agentlake.kafka_io import partitions

    c = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None)
    await c.start()
    try:
        parts = await partitions(c, [settings.topic(topic)])
        return sum((await c.end_offsets(parts)).values())
    finally:
        await c.stop()


def test_bad_file_is_one_line_exit_2_and_publishes_nothing(
    settings: Settings, data: Path, docs_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "ok.md").write_text("fine")
    (tmp_path / "broken.json").write_text("{not json")
    before = asyncio.run(_end_offsets(settings, "lake.documents"))
    r = agentlake("lake", "ingest", "--source", "files", str(tmp_path), env=docs_env)
    assert r.returncode == 2
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "broken.json" in lines[0] and "invalid JSON" in lines[0], r.stderr
    r = agentlake("lake", "ingest", "--source", "delta", str(tmp_path), env=docs_env)
    assert r.returncode == 2 and "not a Delta table" in r.stderr
    assert asyncio.run(_end_offsets(settings, "lake.documents")) == before


def test_ingest_files_parquet_and_delta(data: Path, docs_env: dict[str, str]) -> None:
    from deltalake import write_deltalake

    # the real command once (a subprocess); in-process afterwards (milvus-lite: one process per file)
    r = agentlake(
        "lake", "ingest", "--source", "files", str(data / "kb"), "--tenant", "acme", "--json", env=docs_env
    )
    assert r.returncode == 0, r.stderr
    files = json.loads(r.stdout)
    assert files["documents"] == 3 and files["published"] == 3
    assert files["actions"] == {"insert": 3} and files["chunks"] >= 3
    again = ingest("files", data / "kb", "acme", docs_env)
    assert again["published"] == 0 and again["unchanged"] == 3 and again["actions"] == {}

    parquet = ingest("parquet", data / "globex.parquet", "globex", docs_env)
    assert parquet["actions"] == {"insert": 2}

    write_deltalake(
        str(data / "delta"),
        pa.table(
            {
                "id": ["d1", "d2", "d3"],
                "text": [
                    "Expense reports over 500 need a manager.",
                    "Travel is booked via the portal.",
                    "Old",
                ],
                "access": [["*"], ["group:travel"], ["*"]],
            }
        ),
    )
    delta = ingest("delta", data / "delta", "acme", docs_env)
    assert delta["actions"] == {"insert": 3}
    assert delta["source"] == f"delta:{(data / 'delta').resolve()}"


def test_search_documents_filters_tenant_and_access(docs_env: dict[str, str]) -> None:
    def search(query: str, tenant: str, *who: str) -> list[dict[str, Any]]:
        args = [a for w in who for a in ("--as", w)]
        hits: list[dict[str, Any]] = cli(
            "lake", "search-documents", query, "--tenant", tenant, "-k", "10", *args, env=docs_env
        )
        return hits

    acme = search("refund damaged goods", "acme")
    assert acme[0]["doc_id"] == "policies/refunds.md" and acme[0]["title"] == "Refund policy"
    assert {h["tenant"] for h in acme} == {"acme"}
    assert "salaries" not in {h["doc_id"] for h in acme}
    assert "d2" not in {h["doc_id"] for h in acme}
    hr = search("salary bands engineering", "acme", "user:zoe", "group:hr")
    assert hr[0]["doc_id"] == "salaries" and hr[0]["access"] == ["group:hr"]
    globex = search("refund damaged goods", "globex")
    assert {h["doc_id"] for h in globex} == {"p1", "p2"}
    assert globex[0]["doc_id"] == "p1" and globex[0]["metadata"] == {"region": "eu"}


def test_delta_update_replaces_prunes_and_invalidates_dependents(
    settings: Settings, data: Path, docs_env: dict[str, str]
) -> None:
    from deltalake import write_deltalake

    from agentlake.lake.documents import dependents, document_store, record_usage, search_documents

    s = Settings(milvus_uri=docs_env["AGENTLAKE_MILVUS_URI"])
    store = document_store(s)
    [hit] = search_documents(store, "acme", "expense reports manager", k=1)
    assert hit.doc_id == "d1" and hit.version == 0
    assert record_usage(store, "traj-expenses", [hit]) == 1
    record_usage(store, "traj-old", [("acme", "d3", 0)])
    record_usage(store, "traj-travel", [("acme", "d2", 0)])

    # Delta v1: d1 changes, d2 is a tombstone row, d3 is gone from the table
    write_deltalake(
        str(data / "delta"),
        pa.table(
            {
                "id": ["d1", "d2"],
                "text": ["Expense reports over 1000 need a director.", None],
                "access": [["*"], ["group:travel"]],
                "deleted": [False, True],
            }
        ),
        mode="overwrite",
        schema_mode="overwrite",
    )
    report = ingest("delta", data / "delta", "acme", docs_env)
    assert report["actions"] == {"delete": 2, "replace": 1}
    assert report["pruned"] == 1
    assert report["invalidated"] == ["traj-expenses", "traj-old", "traj-travel"]
    [new] = search_documents(store, "acme", "expense reports manager", k=1)
    assert (new.doc_id, new.version, new.text) == ("d1", 1, "Expense reports over 1000 need a director.")
    assert store.doc_ids("acme", f"delta:{(data / 'delta').resolve()}") == {"d1"}
    assert dependents(store, "acme", "d1", except_version=1) == ["traj-expenses"]


async def test_malformed_record_goes_to_the_dead_letter_topic(
    settings: Settings, docs_env: dict[str, str]
) -> None:
    from aiokafka import AIOKafkaProducer

    from agentlake.cli.query import read_dead_letters
    from agentlake.lake.documents import document_store, project_documents

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("lake.documents"), b"\xc3\x01garbage", key=b"acme\x1fx")
    finally:
        await producer.stop()
    s = Settings(milvus_uri=docs_env["AGENTLAKE_MILVUS_URI"])
    stats = await project_documents(s, timeout=60, store=document_store(s))
    assert stats.dead_letters == 1
    rows = await read_dead_letters(settings, "lake.documents.dlq", 10)
    assert [r["reason"] for r in rows] == ["too_short"]
    assert rows[0]["source_topic"] == settings.topic("lake.documents")
