"""A real multi-broker Kafka cluster (KRaft, every node broker + controller) for tests.

Started from the same cached Apache Kafka jars as the embedded broker, on free
ports bound to 127.0.0.1, with small heaps. Each node is a process this module
started; `kill(node)` sends it SIGKILL, `stop()` ends them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlake import stack
from agentlake.settings import Settings
from tests.conftest import free_port_pair


@dataclass
class Node:
    node_id: int
    port: int
    controller_port: int
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class KRaftCluster:
    """`n` nodes; broker settings are the cluster's defaults (replication, min ISR)."""

    home: Path
    n: int = 3
    heap: str = "256m"
    default_replication_factor: int = 3
    min_insync_replicas: int = 2
    nodes: list[Node] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def _props(self, node: Node, voters: str) -> Path:
        d = self.home / f"node{node.node_id}"
        d.mkdir(parents=True, exist_ok=True)
        rf, isr = self.default_replication_factor, self.min_insync_replicas
        lines = [
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={d / 'data'}",
            "num.partitions=4",
            f"default.replication.factor={rf}",
            f"min.insync.replicas={isr}",
            f"offsets.topic.replication.factor={rf}",
            "offsets.topic.num.partitions=4",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={isr}",
            f"share.coordinator.state.topic.replication.factor={rf}",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "num.network.threads=2",
            "num.io.threads=2",
            "num.replica.fetchers=1",
            "background.threads=2",
            "log.retention.hours=-1",
            "",
        ]
        props = d / "server.properties"
        props.write_text("\n".join(lines))
        (d / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, file\n"
            "log4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={d / 'broker.log'}\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )
        return props

    def start(self, timeout: float = 120.0) -> None:
        """Format and start every node; return once the cluster reports all brokers."""
        libs = stack.kafka_libs(Settings())
        java = stack._java()
        for i in range(1, self.n + 1):
            p = free_port_pair()
            self.nodes.append(Node(i, p, p + 1))
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        cluster_id = uuid.uuid4().hex[:22]
        props = {n.node_id: self._props(n, voters) for n in self.nodes}
        formats = [
            subprocess.Popen(
                [
                    java,
                    "-Xmx128m",
                    "-XX:TieredStopAtLevel=1",
                    "-cp",
                    f"{libs}/*",
                    f"-Dlog4j.configuration=file:{props[n.node_id].parent / 'log4j.properties'}",
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props[n.node_id]),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for n in self.nodes
        ]
        for f in formats:
            out, _ = f.communicate(timeout=120)
            if f.returncode != 0:
                raise RuntimeError(f"formatting a KRaft node failed: {out.decode()[-500:]}")
        for n in self.nodes:
            log = open(props[n.node_id].parent / "broker.out", "ab")  # noqa: SIM115 - the child owns it
            n.proc = subprocess.Popen(
                [
                    java,
                    f"-Xmx{self.heap}",
                    f"-Xms{self.heap}",
                    "-XX:+UseSerialGC",
                    "-XX:TieredStopAtLevel=1",
                    "-Xss512k",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j.configuration=file:{props[n.node_id].parent / 'log4j.properties'}",
                    "-cp",
                    f"{libs}/*",
                    "kafka.Kafka",
                    str(props[n.node_id]),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in self.nodes:
                if n.proc is not None and n.proc.poll() is not None:
                    tail = (props[n.node_id].parent / "broker.out").read_text(errors="replace")[-600:]
                    raise RuntimeError(f"KRaft node {n.node_id} exited with {n.proc.returncode}: {tail}")
            if asyncio.run(self.brokers()) == self.n:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the {self.n}-node KRaft cluster did not form within {timeout:.0f}s")

    async def brokers(self) -> int:
        """Brokers the cluster reports as alive (0 when it does not answer)."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        try:
            await asyncio.wait_for(admin.start(), 5)
            meta = await asyncio.wait_for(admin.describe_cluster(), 5)
            return len(meta["brokers"])
        except Exception:
            return 0
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    async def leader(self, topic: str, partition: int) -> int:
        """The node id leading `topic`/`partition`."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            (t,) = await admin.describe_topics([topic])
            return int(next(p["leader"] for p in t["partitions"] if p["partition"] == partition))
        finally:
            await admin.close()

    def kill(self, node_id: int) -> None:
        node = self.nodes[node_id - 1]
        assert node.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(10)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(node.proc.pid, signal.SIGKILL)
                    node.proc.wait(5)

    def __enter__(self) -> KRaftCluster:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
