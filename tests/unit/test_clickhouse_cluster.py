"""ClickHouse cluster mode (CLICKHOUSE_CLUSTER): the generated DDL and the sharding-safe queries.

No ClickHouse server runs here, so the cluster DDL is checked for its structure
and parsed by the ClickHouse engine itself (chdb's ``formatQuery``); the
GLOBAL IN queries are executed on chdb. chdb allows one engine path per
process, so the engine runs in a child process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentlake.projections.clickhouse import (
    CLUSTER_CLIENT_SETTINGS,
    DDL,
    ZK_PATH,
    cluster_ddl,
    drop_ddl,
    schema_ddl,
    table_names,
)

ROOT = Path(__file__).resolve().parents[2]


def in_chdb(code: str, payload: Any) -> Any:
    """Run `code` in a child Python with chdb; it reads `payload` as ARG and prints JSON."""
    script = "import json, sys\nARG = json.loads(sys.stdin.read())\n" + textwrap.dedent(code)
    r = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(payload), capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_one_server_keeps_the_plain_ddl() -> None:
    assert schema_ddl(None) == list(DDL)
    assert table_names() == [
        "events",
        "trajectories",
        "steps",
        "tool_calls",
        "rewards",
        "reward_components",
        "policy_violations",
        "retracted",
    ]


def test_every_table_becomes_a_replicated_local_table_and_a_distributed_one() -> None:
    stmts = cluster_ddl("agentlake")
    assert ZK_PATH == "/clickhouse/tables/{shard}/{database}/"  # macros each server defines
    for name in table_names():
        local = [
            s
            for s in stmts
            if s.startswith(f"CREATE TABLE IF NOT EXISTS {name}_local ON CLUSTER agentlake (")
        ]
        dist = [
            s for s in stmts if s.startswith(f"CREATE TABLE IF NOT EXISTS {name} ON CLUSTER agentlake AS ")
        ]
        assert len(local) == 1 and len(dist) == 1, name
        assert re.search(
            rf"ENGINE = Replicated\w+MergeTree\('{re.escape(ZK_PATH)}{name}_local', '{{replica}}'",
            local[0],
        ), local[0]
        assert "non_replicated_deduplication_window" not in local[0]
        assert dist[0].endswith(
            f"ENGINE = Distributed(agentlake, currentDatabase(), {name}_local, cityHash64(trajectory_id))"
        )
        # the Distributed table is created after the table it reads
        assert stmts.index(local[0]) < stmts.index(dist[0])
    rewards = next(s for s in stmts if s.startswith("CREATE TABLE IF NOT EXISTS rewards_local"))
    assert f"ReplicatedReplacingMergeTree('{ZK_PATH}rewards_local', '{{replica}}', version)" in rewards
    traj = next(s for s in stmts if s.startswith("CREATE TABLE IF NOT EXISTS trajectories_local"))
    assert "ReplicatedAggregatingMergeTree(" in traj


def test_schema_changes_reach_both_the_local_and_the_distributed_table() -> None:
    alters = [s for s in cluster_ddl("c1") if s.startswith("ALTER")]
    assert (
        "ALTER TABLE rewards_local ON CLUSTER c1 ADD COLUMN IF NOT EXISTS checks Map(String, UInt8)" in alters
    )
    assert "ALTER TABLE rewards ON CLUSTER c1 ADD COLUMN IF NOT EXISTS checks Map(String, UInt8)" in alters
    assert len(alters) == 2 * sum(1 for s in DDL if s.startswith("ALTER"))


def test_a_table_without_trajectory_id_or_an_unknown_statement_is_refused() -> None:
    with pytest.raises(ValueError, match="no trajectory_id"):
        cluster_ddl(
            "c",
            ["CREATE TABLE IF NOT EXISTS docs (doc_id String) ENGINE = ReplacingMergeTree ORDER BY doc_id"],
        )
    with pytest.raises(ValueError, match="cannot rewrite"):
        cluster_ddl("c", ["CREATE VIEW v AS SELECT 1"])


def test_drop_statements_cover_both_layers_on_a_cluster() -> None:
    assert drop_ddl(None) == [f"DROP TABLE IF EXISTS {n}" for n in table_names()]
    dropped = drop_ddl("c")
    assert "DROP TABLE IF EXISTS events ON CLUSTER c SYNC" in dropped
    assert dropped.index("DROP TABLE IF EXISTS events ON CLUSTER c SYNC") < dropped.index(
        "DROP TABLE IF EXISTS events_local ON CLUSTER c SYNC"
    )


def test_a_cluster_client_inserts_synchronously_and_globalises_subqueries() -> None:
    assert CLUSTER_CLIENT_SETTINGS == {"insert_distributed_sync": 1, "distributed_product_mode": "global"}


def test_the_clickhouse_engine_parses_every_cluster_statement() -> None:
    stmts = [*cluster_ddl("agentlake"), *drop_ddl("agentlake")]
    formatted = in_chdb(
        """
        from chdb import session
        s = session.Session()
        out = []
        for q in ARG:
            lit = q.replace("\\\\", "\\\\\\\\").replace("'", "\\\\'")
            out.append(s.query(f"SELECT formatQuery('{lit}')", "JSONCompact").data())
        print(json.dumps([json.loads(o)["data"][0][0] for o in out]))
        """,
        stmts,
    )
    assert len(formatted) == len(stmts)
    for text in formatted:
        assert "ON CLUSTER agentlake" in text
    assert any(
        "ENGINE = Distributed(agentlake, currentDatabase(), events_local, cityHash64(trajectory_id))" in t
        for t in formatted
    )


def test_no_query_in_the_package_sends_a_plain_in_or_join_subquery_to_the_shards() -> None:
    """On a Distributed table, `x IN (SELECT … FROM distributed)` is rejected unless GLOBAL."""
    bad = []
    for path in (ROOT / "agentlake").rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r'\b((NOT\s+)?IN|JOIN)\b[\s"f]*\(\s*SELECT\b', text):
            # GLOBAL may stand before a join's kind: `GLOBAL LEFT JOIN`
            if not re.search(
                r"\bGLOBAL\s+(?:(?:ANY|ALL|ASOF|SEMI|ANTI|LEFT|RIGHT|INNER|FULL|OUTER)\s+)*$",
                text[: m.start()],
            ):
                bad.append(f"{path.relative_to(ROOT)}: {m.group(0)!r}")
    assert bad == []


def test_global_in_queries_of_the_reconciler_and_replay_run_and_are_right(tmp_path: Path) -> None:
    """The rewritten queries, executed by ClickHouse on one server (GLOBAL IN is plain IN there)."""
    res = in_chdb(
        """
        import time
        import clickhouse_connect
        from agentlake.consumers.reconcile import unscored
        from agentlake.projections.clickhouse import DDL, ClickHouseWriter
        from agentlake.sdk import MemoryEmitter, Tracer
        from agentlake.schemas import codec
        from agentlake.sim.replay import trials_of_run
        from agentlake.settings import Settings

        client = clickhouse_connect.get_client(interface="chdb", path=ARG["path"])
        for stmt in DDL:
            client.command(stmt)
        em = MemoryEmitter()
        settings = Settings(home=ARG["path"])
        tracer = Tracer("bot", "1.0", emitter=em, settings=settings)
        ids = []
        for i in range(3):
            with tracer.trajectory(f"task {i}", run_id="r1", attributes={"trial_id": f"t{i}"}) as t:
                t.step("final", "done")
                t.end("success", final_answer="ok")
            ids.append(t.trajectory_id)
        c = codec()
        located = [(c.decode(v), topic, 0, n) for n, (topic, k, v) in enumerate(em.records)]
        ClickHouseWriter(client).write(located, "tok")
        # one of the three has a final reward; the other two are unscored
        client.command(
            "INSERT INTO rewards (trajectory_id, version, event_id, is_final, total, success, scored_at) "
            f"VALUES ('{ids[0]}', 3, 'e', 1, 1.0, 1, now64(6))"
        )
        time.sleep(1.1)
        print(json.dumps({"ids": ids, "unscored": sorted(unscored(client, 1.0)),
                          "trials": trials_of_run(client, run_id="r1")}))
        """,
        {"path": str(tmp_path / "ch")},
    )
    assert res["unscored"] == sorted(res["ids"][1:])
    assert res["trials"] == ["t0", "t1", "t2"]


def test_the_docker_compose_cluster_matches_what_the_ddl_expects() -> None:
    """infra/clickhouse-cluster: 2 shards x 2 replicas, the macros the ZooKeeper paths use, one Keeper."""
    import xml.etree.ElementTree as ET

    import yaml

    folder = ROOT / "infra" / "clickhouse-cluster"
    compose = yaml.safe_load((folder / "docker-compose.yml").read_text())
    config = ET.parse(folder / "cluster.xml").getroot()
    cluster = config.find("remote_servers/agentlake")
    assert cluster is not None
    shards = cluster.findall("shard")
    assert len(shards) == 2 and all(len(s.findall("replica")) == 2 for s in shards)
    assert {m.tag for m in config.find("macros") or []} == {"shard", "replica"}
    nodes = {r.findtext("host") for s in shards for r in s.findall("replica")}
    services = compose["services"]
    assert "keeper" in services and nodes <= set(services)
    shard_of = {n: services[n]["environment"]["SHARD"] for n in nodes}
    for i, s in enumerate(shards, start=1):
        assert {shard_of[r.findtext("host") or ""] for r in s.findall("replica")} == {f"{i:02d}"}


def test_cluster_mode_without_a_server_is_a_clear_error() -> None:
    from agentlake.projections.clickhouse import ClickHouseError, connect
    from agentlake.settings import Settings

    s = Settings(home="/tmp/agentlake-unit-cluster", clickhouse_url=None, clickhouse_cluster="agentlake")  # type: ignore[arg-type]
    with pytest.raises(
        ClickHouseError, match="CLICKHOUSE_CLUSTER needs a ClickHouse server: set CLICKHOUSE_URL"
    ):
        connect(s)
