"""The local stack: a real Apache Kafka broker (KRaft, single node) and the workers.

`up()` fetches the official Kafka jars from Maven Central with `mvn` (once, cached
under ``cache_dir``), formats the broker's storage once, starts it bound to
127.0.0.1, waits until it answers, and creates the topics. With
``KAFKA_BOOTSTRAP_SERVERS`` set no broker is started: topics are created on that
cluster. Everything else lives under the data dir (``AGENTLAKE_HOME``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlake.settings import Settings
from agentlake.topic_admin import TopicsReport
from agentlake.topics import STREAMS_GROUP

REPO_ROOT = Path(__file__).resolve().parents[1]


class StackError(RuntimeError):
    """The local stack could not be brought up; the message says what to do."""


@dataclass
class Proc:
    name: str
    pid_file: Path
    log_file: Path

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        if _is_zombie(pid):
            return None
        return pid

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.1)
        if self.pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            time.sleep(0.2)
        self.pid_file.unlink(missing_ok=True)
        return True


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def broker_proc(s: Settings) -> Proc:
    d = s.data_dir / "kafka"
    return Proc("kafka", d / "broker.pid", d / "broker.log")


def worker_proc(s: Settings, name: str = "streams") -> Proc:
    d = s.data_dir / "logs"
    return Proc(name, s.data_dir / f"{name}.pid", d / f"{name}.log")


# -- Kafka artifacts ------------------------------------------------------------
def kafka_libs(s: Settings, progress: Any = None) -> Path:
    """The broker's classpath folder, fetched with Maven on first use."""
    libs = s.cache_dir / "kafka" / s.kafka_version / "libs"
    if (libs / f"kafka_2.13-{s.kafka_version}.jar").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven (`mvn`) is not on PATH: install it (apt-get install maven) or set KAFKA_BOOTSTRAP_SERVERS"
        )
    pom = Path(os.environ.get("AGENTLAKE_KAFKA_POM", REPO_ROOT / "infra" / "kafka" / "pom.xml"))
    if not pom.exists():
        raise StackError(f"{pom} not found: set AGENTLAKE_KAFKA_POM to infra/kafka/pom.xml of the repository")
    tmp = libs.with_name(f"libs.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress(f"fetching Apache Kafka {s.kafka_version} from Maven Central (once)")
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        f"-Dkafka.version={s.kafka_version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise StackError(
            f"mvn could not fetch Kafka {s.kafka_version}: {(r.stdout + r.stderr).strip()[-400:]}"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    return libs


def _java() -> str:
    java = (
        str(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
        if os.environ.get("JAVA_HOME")
        else shutil.which("java")
    )
    if not java:
        raise StackError(
            "Java 17+ is needed for the local Kafka broker: install openjdk-17 or set KAFKA_BOOTSTRAP_SERVERS"
        )
    return java


def _write_config(s: Settings) -> Path:
    d = s.data_dir / "kafka"
    d.mkdir(parents=True, exist_ok=True)
    port = s.kafka_port
    props = d / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{port + 1}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={d / 'data'}",
                f"num.partitions={s.topic_partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "group.initial.rebalance.delay.ms=0",
                # topics are created by `agentlake up` only: a misspelt name is an error, not a new topic
                "auto.create.topics.enable=false",
                # the largest record batch the broker takes (AGENTLAKE_MAX_MESSAGE_BYTES, README "Limits")
                f"message.max.bytes={s.max_message_bytes}",
                f"replica.fetch.max.bytes={max(s.max_message_bytes, 1048576)}",
                "log.retention.hours=-1",
                "log.flush.interval.messages=9223372036854775807",
                "",
            ]
        )
    )
    (d / "log4j.properties").write_text(
        "log4j.rootLogger=WARN, file\n"
        "log4j.appender.file=org.apache.log4j.FileAppender\n"
        f"log4j.appender.file.File={d / 'broker.log'}\n"
        "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        "log4j.logger.kafka.server.KafkaServer=INFO\nlog4j.logger.kafka.server.BrokerServer=INFO\n"
    )
    return props


def _format_storage(s: Settings, libs: Path, props: Path) -> None:
    meta = s.data_dir / "kafka" / "data" / "meta.properties"
    if meta.exists():
        return
    cluster_id = uuid.uuid4().hex[:22]
    r = subprocess.run(
        [
            _java(),
            "-cp",
            f"{libs}/*",
            f"-Dlog4j.configuration=file:{props.parent / 'log4j.properties'}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise StackError(f"formatting Kafka storage failed: {(r.stdout + r.stderr).strip()[-400:]}")


def start_broker(s: Settings, progress: Any = None, timeout: float = 90.0) -> int:
    """Start the embedded broker unless it already runs; returns its pid."""
    proc = broker_proc(s)
    pid = proc.pid()
    if pid is not None:
        return pid
    if port_open("127.0.0.1", s.kafka_port):
        raise StackError(
            f"port {s.kafka_port} is taken by another process: stop it or set AGENTLAKE_KAFKA_PORT"
        )
    libs = kafka_libs(s, progress)
    props = _write_config(s)
    _format_storage(s, libs, props)
    if progress:
        progress(f"starting Kafka broker on 127.0.0.1:{s.kafka_port}")
    log = open(proc.log_file.with_suffix(".out"), "ab")  # noqa: SIM115 - handed to the child
    p = subprocess.Popen(
        [
            _java(),
            f"-Xmx{s.kafka_heap}",
            f"-Xms{s.kafka_heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{props.parent / 'log4j.properties'}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(props),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    proc.pid_file.write_text(str(p.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            tail = proc.log_file.with_suffix(".out").read_text(errors="replace")[-600:]
            raise StackError(f"Kafka broker exited with {p.returncode}: {tail}")
        if port_open("127.0.0.1", s.kafka_port) and _run_sync(_metadata_ok(s.bootstrap_servers)):
            return p.pid
        time.sleep(0.3)
    raise StackError(f"Kafka broker did not answer within {timeout:.0f}s; see {proc.log_file}")


def port_open(host: str, port: int) -> bool:
    import socket

    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


async def _metadata_ok(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        await asyncio.wait_for(admin.list_topics(), 5)
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def ensure_topics(s: Settings) -> list[str]:
    """Create missing topics and verify existing ones (agentlake.topic_admin); returns the ones created."""
    return (await _ensure_topics(s)).created


async def _ensure_topics(s: Settings) -> TopicsReport:
    from agentlake.topic_admin import TopicError
    from agentlake.topic_admin import ensure_topics as ensure

    try:
        return await ensure(s)
    except TopicError as e:
        raise StackError(str(e)) from None


async def _group_members(s: Settings, group: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers, request_timeout_ms=5000)
    await admin.start()
    try:
        resp = await admin.describe_consumer_groups([group])
        groups = resp[0].to_object()["groups"] if resp else []
        return sum(len(g.get("members") or []) for g in groups)
    finally:
        await admin.close()


def _run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even when called inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def wait_for_dead_members(s: Settings, group: str, timeout: float = 30.0) -> bool:
    """Wait until `group` has no members left (at most `timeout`); False when it did not empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _run_sync(_group_members(s, group)) == 0:
                return True
        except Exception:
            return False  # cannot tell (e.g. old broker)
        time.sleep(0.5)
    return False


STREAM_WORKER = "streams"


def stream_worker_name(index: int) -> str:
    """The name (pid file, log) of stream worker `index` (1-based): streams, streams-2, streams-3 ..."""
    return STREAM_WORKER if index <= 1 else f"{STREAM_WORKER}-{index}"


def stream_workers(s: Settings) -> dict[str, int | None]:
    """Every stream worker that has a pid file under the data dir: name -> pid (None when not alive)."""
    out: dict[str, int | None] = {}
    for f in sorted(s.data_dir.glob(f"{STREAM_WORKER}*.pid")):
        name = f.stem
        if name == STREAM_WORKER or name.removeprefix(f"{STREAM_WORKER}-").isdigit():
            out[name] = worker_proc(s, name).pid()
    return out


def start_worker(s: Settings, name: str = "streams", extra_env: dict[str, str] | None = None) -> int:
    """Start `agentlake worker streams|sink` as a daemon (pid file + log under the data dir).

    Stream workers named ``streams-N`` join the same consumer group; a worker that
    replaces a killed one does not wait for it to leave the group (its partitions
    move once the broker notices, after `worker_session_timeout_s`).
    """
    proc = worker_proc(s, name)
    pid = proc.pid()
    if pid is not None:
        return pid
    proc.log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AGENTLAKE_HOME": str(s.data_dir), **(extra_env or {})}
    if s.kafka_bootstrap_servers is None:
        env["AGENTLAKE_KAFKA_PORT"] = str(s.kafka_port)
    kind = STREAM_WORKER if name.startswith(STREAM_WORKER) else name
    cmd = [sys.executable, "-m", "agentlake", "worker", kind]
    if kind == STREAM_WORKER:
        cmd += ["--name", name]
    log = open(proc.log_file, "ab")  # noqa: SIM115
    p = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    proc.pid_file.write_text(str(p.pid))
    return p.pid


def start_stream_workers(s: Settings, count: int, extra_env: dict[str, str] | None = None) -> dict[str, int]:
    """Make stream workers 1..`count` run (one consumer group); those already alive are left alone."""
    return {
        stream_worker_name(i): start_worker(s, stream_worker_name(i), extra_env) for i in range(1, count + 1)
    }


def stop_stream_workers(s: Settings, names: list[str] | None = None, sig: int = signal.SIGTERM) -> list[str]:
    """Stop the named stream workers (default: all); returns the ones that were running."""
    stopped = []
    for name in names if names is not None else list(stream_workers(s)):
        if worker_proc(s, name).stop(sig=sig):
            stopped.append(name)
    return stopped


def restart_stream_worker(s: Settings, name: str, extra_env: dict[str, str] | None = None) -> int:
    """Stop `name` if it runs, start it again, while the group's other workers keep running."""
    worker_proc(s, name).stop()
    return start_worker(s, name, extra_env)


def worker_health(s: Settings) -> dict[str, Any]:
    """For `agentlake status`: each stream worker's pid (None: not running, e.g. crashed), how many
    trajectories the sink's reconciler had to score (an alarm: 0 when the worker lost nothing) and
    how many rows Milvus refused (logged by the sink with their ids, skipped)."""
    from agentlake.consumers.sink import reconciled_count
    from agentlake.projections.milvus import refused_count

    workers = stream_workers(s)
    return {
        "stream_workers": workers,
        "stream_workers_down": sorted(n for n, pid in workers.items() if pid is None),
        "reconciled": reconciled_count(s),
        "milvus_refused": refused_count(s),
    }


def up(s: Settings, *, workers: bool = True, progress: Any = None) -> dict[str, Any]:
    s.data_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"home": str(s.data_dir), "bootstrap_servers": s.bootstrap_servers}
    if s.embedded_kafka:
        info["broker_pid"] = start_broker(s, progress)
        record_stack(s)
    elif not _run_sync(_metadata_ok(s.bootstrap_servers)):
        raise StackError(f"KAFKA_BOOTSTRAP_SERVERS={s.bootstrap_servers} does not answer")
    topics = _run_sync(_ensure_topics(s))
    info["topics_created"] = topics.created
    info["replication_factor"] = topics.replication_factor
    info["min_insync_replicas"] = topics.min_insync_replicas
    info["schemas_published"] = _publish_schemas(s)
    if workers:
        # the worker creates nothing the check above did not, but give faust the same copies
        rf = {"AGENTLAKE_TOPIC_REPLICATION_FACTOR": str(topics.replication_factor)}
        proc = worker_proc(s, "streams")
        if process_state(proc) == "crashed":  # its pid file outlived it: say so, keep its log
            info["streams_crashed_log"] = str(proc.log_file)
            if progress is not None:
                progress(f"the stream worker had died (its log: {proc.log_file}); starting it again")
        info["streams_pid"] = start_worker(s, "streams", extra_env=rf)
    return info


def down(s: Settings) -> dict[str, bool]:
    out = {"streams": bool(stop_stream_workers(s)), "sink": worker_proc(s, "sink").stop()}
    out["kafka"] = broker_proc(s).stop(timeout=40) if s.embedded_kafka else False
    return out


def _publish_schemas(s: Settings) -> int:
    """Announce the installed writer schemas (forward compatibility: README "Evolution")."""
    from agentlake.schema_registry import publish

    try:
        n: int = _run_sync(publish(s))
        return n
    except Exception:
        return 0


def record_stack(s: Settings) -> None:
    """Record which data dir the local broker on this port serves, so that commands run
    from any folder find it (`Settings.data_dir`)."""
    import json

    s.stack_record.parent.mkdir(parents=True, exist_ok=True)
    tmp = s.stack_record.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"home": str(s.data_dir), "port": s.kafka_port}))
    tmp.rename(s.stack_record)


def process_state(proc: Proc) -> str:
    """``running``, ``stopped`` (never started, or stopped by `down`) or ``crashed`` (its pid
    file remains but the process is gone)."""
    if proc.pid() is not None:
        return "running"
    return "crashed" if proc.pid_file.exists() else "stopped"


async def _lags(s: Settings) -> dict[str, int | None]:
    from agentlake.kafka_io import group_offsets
    from agentlake.topics import TRAJECTORY_TOPICS

    topics = {s.topic(t) for t in TRAJECTORY_TOPICS}
    out: dict[str, int | None] = {}
    groups = [("streams_lag", STREAMS_GROUP)]
    if s.clickhouse_url or (s.data_dir / "store-id").exists():  # never create a store to look at it
        groups.append(("sink_lag", s.sink_group))
    for name, group in groups:
        try:
            committed, ends = await asyncio.wait_for(
                group_offsets(s, s.topic(group), topics, every_partition=True), 10
            )
        except Exception:
            out[name] = None
            continue
        out[name] = (
            sum(max(0, ends.get(tp, off) - off) for tp, off in committed.items()) if committed else None
        )
    return out


def status(s: Settings) -> dict[str, Any]:
    """What runs where: pids, whether a worker crashed, lags (events not yet processed by
    the stream worker and by this store's sink; None when unknown), quarantined events."""
    from agentlake.sdk._spill import count_quarantined

    streams, sink = worker_proc(s, "streams"), worker_proc(s, "sink")
    has_store = bool(s.clickhouse_url) or (s.data_dir / "store-id").exists()  # never create one here
    info: dict[str, Any] = {
        "home": str(s.data_dir),
        "bootstrap_servers": s.bootstrap_servers,
        "embedded_kafka": s.embedded_kafka,
        "broker_pid": broker_proc(s).pid() if s.embedded_kafka else None,
        "streams_pid": streams.pid(),
        "streams": process_state(streams),
        "sink_pid": sink.pid(),
        "sink": process_state(sink),
        "clickhouse": s.clickhouse_url or f"chdb:{s.chdb_path}",
        "milvus": s.milvus_target,
        "sink_group": s.topic(s.sink_group) if has_store else None,
        "quarantined": count_quarantined(s.spill_dir),
    }
    for name, proc in (("streams", streams), ("sink", sink)):
        if info[name] == "crashed":
            info[f"{name}_log"] = str(proc.log_file)
    info["kafka_reachable"] = _run_sync(_metadata_ok(s.bootstrap_servers))
    info.update(worker_health(s))
    if info["kafka_reachable"]:
        info.update(_run_sync(_lags(s)))
    return info
