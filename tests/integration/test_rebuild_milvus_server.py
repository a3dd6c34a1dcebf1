"""Milvus over the network (`milvus-lite server`): the sink writes from one process, a reader
searches from another, and a new, empty server is backfilled by `agentlake projections rebuild`.

Runs its own pipeline on the session's broker (own topic prefix, data dir and stream
worker), so the sink can be a separate process with its own embedded ClickHouse.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentlake import stack
from agentlake.demo import run_agents
from agentlake.kafka_io import group_offsets
from agentlake.projections.embeddings import get_embedder
from agentlake.projections.milvus import TrajectoryIndex, collection_name
from agentlake.sdk import KafkaEmitter
from agentlake.settings import Settings
from agentlake.topics import REWARDS, SINK_GROUP, TRAJECTORY_TOPICS
from tests.conftest import free_port_pair
from tests.integration.helpers import TeeEmitter


class MilvusServer:
    """`milvus-lite server` on a free port, as a child process."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port_pair()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "milvus_lite",
                "server",
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not stack.port_open("127.0.0.1", self.port):
            assert self.proc.poll() is None, "milvus-lite server exited"
            assert time.monotonic() < deadline, "milvus-lite server did not listen"
            time.sleep(0.2)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # its data is a throwaway temp dir
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def cli(*args: str, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "agentlake", *args], capture_output=True, text=True, timeout=240, env=env
    )
    if ok:
        assert r.returncode == 0, r.stderr[-1500:]
    return r


def rows_of(uri: str, collection: str) -> list[str]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    try:
        rows = client.query(collection, filter='trajectory_id != ""', output_fields=["*"])
    finally:
        client.close()
    for r in rows:
        r["vector"] = [round(float(x), 6) for x in r["vector"]]
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[MilvusServer, MilvusServer]]:
    live, fresh = MilvusServer(tmp_path / "milvus-live"), MilvusServer(tmp_path / "milvus-new")
    try:
        yield live, fresh
    finally:
        live.stop()
        fresh.stop()


async def test_sink_and_reader_share_a_milvus_server_and_a_new_one_is_backfilled(
    settings: Settings, servers: tuple[MilvusServer, MilvusServer], tmp_path: Path
) -> None:
    live, fresh = servers
    env: dict[str, Any] = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "AGENTLAKE_HOME": str(tmp_path / "home"),
        "AGENTLAKE_TOPIC_PREFIX": f"mv{uuid.uuid4().hex[:6]}-",
        "AGENTLAKE_SINK_BATCH_MS": "100",
        "MILVUS_URI": live.uri,
    }
    s = Settings(
        home=env["AGENTLAKE_HOME"],
        kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        topic_prefix=env["AGENTLAKE_TOPIC_PREFIX"],
        milvus_uri=live.uri,
    )
    sink = None
    saved = dict(os.environ)
    os.environ.update(env)  # the stream worker started by `up` inherits it
    try:
        await asyncio.to_thread(stack.up, s, workers=True)
        sink = subprocess.Popen(
            [sys.executable, "-m", "agentlake", "worker", "sink"],
            stdout=open(tmp_path / "sink.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        tee = TeeEmitter(KafkaEmitter(s.bootstrap_servers, s.spill_dir / "agents"))
        ids = await run_agents(s, tee, f"mv-{uuid.uuid4().hex[:6]}", n_per_agent=3)
        assert await asyncio.to_thread(tee.flush, 60)
        tee.close(5)

        # a reader in this process, over the network, sees what the sink process wrote
        from agentlake.projections import milvus as milvus_module

        milvus_module._clients.pop(live.uri, None)
        name = collection_name(s)
        deadline = time.monotonic() + 150
        index = None
        while time.monotonic() < deadline:
            if index is None and _has_collection(live.uri, name):
                index = TrajectoryIndex(s, get_embedder(s))
            if index is not None and index.count() >= len(ids):
                break
            await asyncio.sleep(1)
        assert index is not None and index.count() == len(ids)
        hits = index.nearest("Refund my broken order 12 please", k=3)
        assert len(hits) == 3 and {h.trajectory_id for h in hits} <= set(ids)

        # the embedded ClickHouse belongs to the running sink: a rebuild says so in one line
        busy = cli("projections", "rebuild", "--target", "clickhouse", "--json", env=env, ok=False)
        assert busy.returncode == 2
        assert "in use by pid" in busy.stderr and len(busy.stderr.strip().splitlines()) == 1

        sink.send_signal(signal.SIGTERM)
        sink.wait(30)
        sink = None
        offsets = (
            await group_offsets(s, s.topic(SINK_GROUP), {s.topic(t) for t in (*TRAJECTORY_TOPICS, REWARDS)})
        )[0]

        # a new Milvus server holds nothing until it is backfilled from the log
        out = cli(
            "projections", "rebuild", "--target", "milvus", "--json", env={**env, "MILVUS_URI": fresh.uri}
        )
        stats = json.loads(out.stdout)
        assert stats["target"] == "milvus" and stats["vectors"] >= len(ids) and stats["records"] > 0
        assert rows_of(fresh.uri, name) == rows_of(live.uri, name)

        # ClickHouse dropped and rebuilt through the CLI, read back through the CLI
        ch = json.loads(
            cli("projections", "rebuild", "--target", "clickhouse", "--recreate", "--json", env=env).stdout
        )
        assert ch["recreated"] and ch["rows"]["events"] >= len(tee.records)
        counts = cli(
            "sql",
            "--json",
            "SELECT (SELECT count() FROM events FINAL) AS events, "
            "(SELECT uniqExact(trajectory_id) FROM rewards FINAL WHERE is_final = 1) AS finals",
            env=env,
        )
        assert json.loads(counts.stdout) == [{"events": len(tee.records), "finals": len(ids)}]
        bad = cli(
            "projections", "rebuild", "--target", "clickhouse", "--since", "yesterday", env=env, ok=False
        )
        assert bad.returncode == 2 and "neither an ISO time" in bad.stderr

        # the live sink's offsets were not moved by any of it
        assert (await group_offsets(s, s.topic(SINK_GROUP), set(t.topic for t in offsets)))[0] == offsets
    finally:
        if sink is not None:
            sink.kill()
            sink.wait(10)
        await asyncio.to_thread(stack.down, s)
        os.environ.clear()
        os.environ.update(saved)


def _has_collection(uri: str, name: str) -> bool:
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    try:
        return bool(client.has_collection(name))
    finally:
        client.close()
