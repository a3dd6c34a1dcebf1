"""Topic creation and verification: every topic AgentLake or its stream worker needs.

`agentlake up` calls `ensure_topics`: it resolves the replication factor (the
``AGENTLAKE_TOPIC_REPLICATION_FACTOR`` setting, else the cluster's
``default.replication.factor``, 1 for the embedded broker), creates what is
missing with that many copies (and ``min.insync.replicas`` when set), and
checks what exists: partitions, cleanup policy, replication. Any creation
error, or a topic that does not fit, is a `TopicError` with one line that says
what to do. The stream worker's own topics (its state table's changelog and
faust's assignor topic) are created here too, so they get the same copies.

The checks are pure (`problems`) and unit-tested without Kafka.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agentlake.settings import Settings
from agentlake.topics import STREAM_CHECKPOINTS, TRAJECTORY_TOPICS, all_topics, size_config

log = logging.getLogger("agentlake.topics")


class TopicError(RuntimeError):
    """A topic cannot be created, or an existing one does not fit; the message says what to do."""


@dataclass(frozen=True)
class WantedTopic:
    """A topic as AgentLake needs it.

    Attributes:
        name: full name (prefix applied).
        partitions: partition count to create with.
        compacted: ``cleanup.policy=compact`` (a table) rather than ``delete`` (a log).
        exact_partitions: the count must match exactly (co-partitioned by trajectory_id
            with the stream worker's table); otherwise at least `partitions`.
        config: extra topic configs to create with.
    """

    name: str
    partitions: int
    compacted: bool = False
    exact_partitions: bool = False
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExistingTopic:
    """What the cluster reports for a topic: partitions, fewest copies of any partition, configs."""

    name: str
    partitions: int
    replication: int
    cleanup_policy: str = "delete"
    min_insync_replicas: int | None = None


def wanted_topics(s: Settings) -> list[WantedTopic]:
    """Every topic AgentLake creates: the log (`topics.all_topics`) and the stream worker's own."""
    n = s.topic_partitions
    out = [
        WantedTopic(
            s.topic(t.name),
            n,
            compacted=t.compacted,
            exact_partitions=t.name in TRAJECTORY_TOPICS or t.name == STREAM_CHECKPOINTS,
            config={**t.config, **size_config(t.name, s.max_event_bytes)},
        )
        for t in all_topics()
    ]
    return out + stream_worker_topics(s)


def stream_worker_topics(s: Settings) -> list[WantedTopic]:
    """The topics faust declares for the stream worker: its tables' changelogs (compacted,
    co-partitioned with the trajectory topics) and its assignor's leader topic.

    Read from the app itself (built, never started), so they follow the worker's code.
    Empty when the app cannot be built here: faust then declares them itself, with the
    replication factor `agentlake up` hands the worker.
    """
    try:
        from agentlake.streams.app import create_app

        app = create_app(s)
    except Exception as e:  # pragma: no cover - depends on the worker's code
        log.warning("cannot list the stream worker's own topics (%s); faust will declare them", e)
        return []
    out = [
        WantedTopic(
            t.changelog_topic.get_topic_name(),
            t.partitions or s.topic_partitions,
            compacted=True,
            exact_partitions=True,
        )
        for t in app.tables.values()
    ]
    out.append(WantedTopic(f"{app.conf.id}-__assignor-__leader", 1))
    return out


def create_config(t: WantedTopic, min_insync_replicas: int | None) -> dict[str, str]:
    """Topic configs `t` is created with."""
    cfg = {"cleanup.policy": "compact" if t.compacted else "delete", **t.config}
    if min_insync_replicas is not None:
        cfg["min.insync.replicas"] = str(min_insync_replicas)
    return cfg


def problems(
    wanted: Iterable[WantedTopic],
    existing: dict[str, ExistingTopic],
    replication_factor: int,
    min_insync_replicas: int | None,
) -> list[str]:
    """One line per existing topic that does not fit what AgentLake needs (empty: all fit).

    Args:
        wanted: the topics AgentLake needs.
        existing: what the cluster holds, by name (topics not in it are skipped).
        replication_factor: copies every topic must have at least.
        min_insync_replicas: when set, the least ``min.insync.replicas`` each topic must have.
    """
    out = []
    for w in wanted:
        e = existing.get(w.name)
        if e is None:
            continue
        if w.exact_partitions and e.partitions != w.partitions:
            out.append(
                f"topic {w.name} has {e.partitions} partitions but AgentLake needs exactly {w.partitions} "
                "(co-partitioned by trajectory_id with the stream worker's state): "
                f"set AGENTLAKE_TOPIC_PARTITIONS={e.partitions} or recreate the topic"
            )
        elif e.partitions < w.partitions:
            out.append(
                f"topic {w.name} has {e.partitions} partitions, fewer than AGENTLAKE_TOPIC_PARTITIONS="
                f"{w.partitions}: add partitions (kafka-topics.sh --alter --partitions {w.partitions}) "
                f"or set AGENTLAKE_TOPIC_PARTITIONS={e.partitions}"
            )
        policies = {p.strip() for p in e.cleanup_policy.split(",")}
        if w.compacted and "compact" not in policies:
            out.append(
                f"topic {w.name} has cleanup.policy={e.cleanup_policy} but AgentLake reads it as a table: "
                "set cleanup.policy=compact"
            )
        elif not w.compacted and "compact" in policies:
            out.append(
                f"topic {w.name} has cleanup.policy={e.cleanup_policy}, which would drop events of the log: "
                "set cleanup.policy=delete"
            )
        if e.replication < replication_factor:
            out.append(
                f"topic {w.name} has {e.replication} cop{'y' if e.replication == 1 else 'ies'} but "
                f"{replication_factor} are needed: reassign its partitions "
                "(kafka-reassign-partitions.sh) or set AGENTLAKE_TOPIC_REPLICATION_FACTOR"
            )
        if (
            min_insync_replicas is not None
            and e.min_insync_replicas is not None
            and e.min_insync_replicas < min_insync_replicas
        ):
            out.append(
                f"topic {w.name} has min.insync.replicas={e.min_insync_replicas}, fewer than "
                f"AGENTLAKE_TOPIC_MIN_INSYNC_REPLICAS={min_insync_replicas}: "
                f"kafka-configs.sh --alter --add-config min.insync.replicas={min_insync_replicas}"
            )
    return out


def check_settings(replication_factor: int, min_insync_replicas: int | None, brokers: int) -> None:
    """Raise `TopicError` when the replication settings cannot work on a cluster of `brokers`."""
    if replication_factor > brokers:
        raise TopicError(
            f"replication factor {replication_factor} needs as many brokers but the cluster has {brokers}: "
            "set AGENTLAKE_TOPIC_REPLICATION_FACTOR"
        )
    if min_insync_replicas is not None and min_insync_replicas > replication_factor:
        raise TopicError(
            f"AGENTLAKE_TOPIC_MIN_INSYNC_REPLICAS={min_insync_replicas} exceeds the replication factor "
            f"{replication_factor}: every acks=all write would fail"
        )


# -- Kafka adapter ----------------------------------------------------------------
async def _broker_config(admin: Any, broker_id: int, names: list[str]) -> dict[str, str]:
    """The broker configs among `names` that `broker_id` reports (none when it refuses, e.g. ACLs)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    resp = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(broker_id), None)])
    out = {}
    for r in resp:
        for res in r.resources:
            if res[0] != 0:
                continue
            for entry in res[4]:
                if entry[0] in names:
                    out[entry[0]] = entry[1]
    return out


async def cluster_replication(admin: Any) -> tuple[int | None, int]:
    """(the cluster's ``default.replication.factor``, or None when a broker will not say; brokers)."""
    meta = await admin.describe_cluster()
    brokers = [b["node_id"] for b in meta["brokers"]]
    cfg = await _broker_config(admin, brokers[0], ["default.replication.factor"])
    value = cfg.get("default.replication.factor")
    return (int(value) if value else None), len(brokers)


def resolve_replication(s: Settings, cluster_default: int | None) -> int:
    """The replication factor new topics get: the setting, else 1 for the embedded broker,
    else the cluster's ``default.replication.factor``.

    Raises:
        TopicError: unset, on a cluster that does not tell its default.
    """
    if s.topic_replication_factor is not None:
        return s.topic_replication_factor
    if s.embedded_kafka:
        return 1
    if cluster_default is None:
        raise TopicError(
            "the cluster does not tell its default.replication.factor (DescribeConfigs refused): "
            "set AGENTLAKE_TOPIC_REPLICATION_FACTOR"
        )
    return cluster_default


async def describe(admin: Any, names: list[str]) -> dict[str, ExistingTopic]:
    """The existing topics among `names`, as the cluster reports them."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    listed = set(await admin.list_topics())  # describing a missing topic may auto-create it
    names = [n for n in names if n in listed]
    if not names:
        return {}
    topics = await admin.describe_topics(names)
    found = {t["topic"]: t for t in topics if t["error_code"] == 0 and t["partitions"]}
    if not found:
        return {}
    resp = await admin.describe_configs(
        [
            ConfigResource(ConfigResourceType.TOPIC, n, {"cleanup.policy": None, "min.insync.replicas": None})
            for n in found
        ]
    )
    configs: dict[str, dict[str, str]] = {}
    for r in resp:
        for res in r.resources:
            configs[res[3]] = {entry[0]: entry[1] for entry in res[4]}
    out = {}
    for name, t in found.items():
        cfg = configs.get(name, {})
        isr = cfg.get("min.insync.replicas")
        out[name] = ExistingTopic(
            name=name,
            partitions=len(t["partitions"]),
            replication=min(len(p["replicas"]) for p in t["partitions"]),
            cleanup_policy=cfg.get("cleanup.policy", "delete"),
            min_insync_replicas=int(isr) if isr else None,
        )
    return out


async def _describe_all(admin: Any, names: list[str], timeout: float) -> dict[str, ExistingTopic]:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = await describe(admin, names)
        if len(found) == len(names) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    missing = sorted(set(names) - set(found))
    if missing:
        raise TopicError(
            f"topic {missing[0]} was created but the cluster does not describe it after {timeout:.0f}s"
        )
    return found


@dataclass
class TopicsReport:
    """What `ensure_topics` did: topics created, and the replication they were created with."""

    created: list[str]
    replication_factor: int
    min_insync_replicas: int | None
    checked: int


async def ensure_topics(s: Settings, *, timeout_ms: int = 30000) -> TopicsReport:
    """Create the missing topics and verify the existing ones.

    Raises:
        TopicError: a creation failed (e.g. an invalid name from AGENTLAKE_TOPIC_PREFIX, a
            replication factor above the broker count), or an existing topic does not fit.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        default_rf, brokers = await cluster_replication(admin)
        rf = resolve_replication(s, default_rf)
        isr = s.topic_min_insync_replicas
        check_settings(rf, isr, brokers)
        wanted = wanted_topics(s)
        existing = await describe(admin, [w.name for w in wanted])
        missing = [w for w in wanted if w.name not in existing]
        created = []
        if missing:
            resp = await admin.create_topics(
                [NewTopic(w.name, w.partitions, rf, topic_configs=create_config(w, isr)) for w in missing],
                timeout_ms=timeout_ms,
            )
            for name, code, message in resp.topic_errors:
                if code == 0:
                    created.append(name)
                elif code != TopicAlreadyExistsError.errno:  # a concurrent `up` made it: verified below
                    err = for_code(code).__name__
                    raise TopicError(f"cannot create topic {name!r}: {err}: {message or 'no detail'}")
            # brokers learn of new topics asynchronously: wait until every one is described
            existing.update(await _describe_all(admin, [w.name for w in missing], timeout_ms / 1000))
        bad = problems(wanted, existing, rf, isr)
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise TopicError(bad[0] + more)
        return TopicsReport(
            created=created, replication_factor=rf, min_insync_replicas=isr, checked=len(existing)
        )
    finally:
        await admin.close()
