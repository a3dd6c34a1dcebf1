"""Connectors: a folder of files, Parquet (pyarrow) and a real Delta table (deltalake's writer)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentlake.lake.documents import (
    Connector,
    ConnectorError,
    DeltaConnector,
    FilesConnector,
    ParquetConnector,
    SqlConnector,
    connector_for,
    read_all,
    rows_to_documents,
)


def _kb(root: Path) -> Path:
    (root / "policies").mkdir(parents=True)
    (root / "policies" / "refunds.md").write_text("# Refund policy\n\nDamaged goods are refunded.\n")
    (root / "faq.txt").write_text("Shipping takes 3 days.")
    (root / "hr.json").write_text(
        json.dumps(
            [
                {"id": "salaries", "text": "Salary bands.", "access": ["group:hr"], "version": 7},
                {"id": "holidays", "text": "25 days.", "metadata": {"owner": "hr", "year": 2026}},
            ]
        )
    )
    (root / "single.json").write_text(json.dumps({"text": "A single object.", "title": "One"}))
    (root / "logo.png").write_bytes(b"\x89PNG")
    (root / ".hidden.md").write_text("secret")
    return root


def test_files_connector_reads_text_markdown_and_json(tmp_path: Path) -> None:
    c = FilesConnector(_kb(tmp_path / "kb"), tenant="acme")
    assert isinstance(c, Connector)
    docs = {d.doc_id: d for d in read_all(c, 10_000)}
    assert set(docs) == {"policies/refunds.md", "faq.txt", "salaries", "holidays", "single.json"}
    md = docs["policies/refunds.md"]
    assert (md.title, md.content_type, md.tenant, md.access) == (
        "Refund policy",
        "text/markdown",
        "acme",
        ("*",),
    )
    assert md.source == f"files:{(tmp_path / 'kb').resolve()}"
    assert md.version == (tmp_path / "kb" / "policies" / "refunds.md").stat().st_mtime_ns // 1000
    assert docs["salaries"].access == ("group:hr",) and docs["salaries"].version == 7
    assert docs["holidays"].metadata == {"owner": "hr", "year": "2026"}
    assert docs["single.json"].title == "One"
    assert [p.name for p in c.skipped] == ["logo.png"]
    assert c.estimate() == 4


def test_files_connector_default_access_and_mtime_version(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("x")
    os.utime(tmp_path / "a.md", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    [doc] = read_all(FilesConnector(tmp_path, access=("group:eng",)), 100)
    assert doc.access == ("group:eng",)
    assert doc.version == 1_700_000_000_123_456


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", b"{not json", "invalid JSON"),
        ("bin.txt", b"\xff\xfe\x00bad", "not UTF-8"),
        ("list.json", b'[{"id": "x"}]', "has no 'text' field"),
        ("rules.json", b'{"id": "x", "text": "t", "access": ["finance"]}', "bad access rule"),
        ("scalar.json", b"[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / "good.md").write_text("fine")
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ConnectorError, match=message) as e:
        read_all(FilesConnector(tmp_path), 10_000)
    assert "\n" not in str(e.value)
    assert name in str(e.value)


def test_oversized_and_duplicate_documents_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("x" * 200)
    with pytest.raises(ConnectorError, match="over AGENTLAKE_LAKE_DOC_MAX_BYTES"):
        read_all(FilesConnector(tmp_path), 100)
    (tmp_path / "big.txt").unlink()
    (tmp_path / "d.json").write_text(json.dumps([{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]))
    with pytest.raises(ConnectorError, match="appears twice"):
        read_all(FilesConnector(tmp_path), 100)


def test_missing_path_and_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match="no such"):
        connector_for("files", str(tmp_path / "nope"))
    with pytest.raises(ConnectorError, match="unknown source"):
        connector_for("snowflake", str(tmp_path))


def _table() -> pa.Table:
    return pa.table(
        {
            "id": ["r1", "r2", "r3"],
            "text": ["Refunds within 30 days.", "Salary bands.", None],
            "title": ["Refunds", None, None],
            "access": [["*"], ["group:hr", "user:ceo"], None],
            "region": ["eu", "us", "eu"],
            "deleted": [False, False, True],
        }
    )


def test_parquet_connector_maps_columns(tmp_path: Path) -> None:
    pq.write_table(_table(), tmp_path / "docs.parquet")
    c = ParquetConnector(tmp_path / "docs.parquet", tenant="acme")
    assert c.estimate() == 3
    docs = read_all(c, 1000)
    assert [d.doc_id for d in docs] == ["r1", "r2", "r3"]
    assert docs[1].access == ("group:hr", "user:ceo")
    assert docs[0].metadata == {"region": "eu"}
    assert docs[2].deleted and docs[2].text == ""
    assert docs[0].version == (tmp_path / "docs.parquet").stat().st_mtime_ns // 1000
    assert docs[0].source.startswith("parquet:")


def test_parquet_without_required_columns_or_not_parquet(tmp_path: Path) -> None:
    pq.write_table(pa.table({"name": ["a"], "text": ["b"]}), tmp_path / "noid.parquet")
    with pytest.raises(ConnectorError, match="no 'id' or 'doc_id' column"):
        read_all(ParquetConnector(tmp_path / "noid.parquet"), 100)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ConnectorError, match="not a readable Parquet dataset"):
        read_all(ParquetConnector(tmp_path / "junk.parquet"), 100)


def test_delta_connector_reads_a_real_delta_table_and_its_versions(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    path = tmp_path / "delta"
    write_deltalake(str(path), _table())
    first = read_all(DeltaConnector(path, tenant="acme"), 1000)
    assert [d.doc_id for d in first] == ["r1", "r2", "r3"]
    assert all(d.version == 0 for d in first)  # the Delta table version
    assert first[1].access == ("group:hr", "user:ceo")
    assert first[2].deleted
    assert first[0].source == f"delta:{path.resolve()}"
    write_deltalake(
        str(path),
        pa.table({"id": ["r1"], "text": ["Refunds within 60 days."], "tenant": ["globex"]}),
        mode="overwrite",
        schema_mode="overwrite",
    )
    [doc] = read_all(DeltaConnector(path, tenant="acme"), 1000)
    assert (doc.doc_id, doc.version, doc.tenant, doc.text) == ("r1", 1, "globex", "Refunds within 60 days.")
    old = read_all(DeltaConnector(path, table_version=0), 1000)
    assert [d.doc_id for d in old] == ["r1", "r2", "r3"]


def test_delta_row_without_text_is_named_by_position(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    write_deltalake(str(tmp_path / "d"), pa.table({"id": ["a", "b"], "text": ["ok", None]}))
    with pytest.raises(ConnectorError, match="row 1: document 'b' has no 'text' field"):
        read_all(DeltaConnector(tmp_path / "d"), 1000)


def test_delta_connector_rejects_a_folder_that_is_not_a_table(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConnectorError, match="not a Delta table"):
        read_all(DeltaConnector(tmp_path / "plain"), 100)


def test_rows_to_documents_is_the_warehouse_hook() -> None:
    rows = [{"doc_id": 1, "body": "from a warehouse cursor", "version": "3"}]
    [doc] = rows_to_documents(rows, tenant="acme", source="snowflake://acct/db/kb", version=0)
    assert (doc.doc_id, doc.text, doc.version, doc.source) == (
        "1",
        "from a warehouse cursor",
        3,
        "snowflake://acct/db/kb",
    )
    with pytest.raises(ConnectorError, match="row 0: version 'x' is not an integer"):
        list(rows_to_documents([{"id": "a", "text": "b", "version": "x"}], tenant="t", source="s", version=0))


def test_sql_connector_reads_any_dbapi_connection(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "wh.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE kb (doc_id TEXT, body TEXT, acl TEXT, region TEXT, version INT)")
        conn.executemany(
            "INSERT INTO kb VALUES (?, ?, ?, ?, ?)",
            [("a", "Refunds in 30 days.", "*", "eu", 3), ("b", "Salary bands.", "group:hr", "us", 4)],
        )
    c = SqlConnector(
        lambda: sqlite3.connect(db),
        "SELECT doc_id, body, acl AS access, region, version FROM kb ORDER BY doc_id",
        source="sqlite://wh/kb",
        tenant="acme",
        batch=1,
    )
    assert isinstance(c, Connector)
    docs = read_all(c, 1000)
    assert [(d.doc_id, d.text, d.access, d.version, d.metadata) for d in docs] == [
        ("a", "Refunds in 30 days.", ("*",), 3, {"region": "eu"}),
        ("b", "Salary bands.", ("group:hr",), 4, {"region": "us"}),
    ]
    bad = SqlConnector(lambda: sqlite3.connect(db), "SELECT doc_id, region FROM kb", source="sqlite://wh/kb")
    with pytest.raises(ConnectorError, match="no 'text' column"):
        read_all(bad, 1000)
    broken = SqlConnector(lambda: sqlite3.connect(db), "SELECT * FROM nope", source="sqlite://wh/kb")
    with pytest.raises(ConnectorError, match="query failed"):
        read_all(broken, 1000)
