"""Topic verification (agentlake.topic_admin): what `agentlake up` accepts and refuses, no broker."""

from __future__ import annotations

import pytest

from agentlake.settings import Settings
from agentlake.topic_admin import (
    ExistingTopic,
    TopicError,
    WantedTopic,
    check_settings,
    create_config,
    problems,
    wanted_topics,
)

S = Settings(home="/tmp/agentlake-unit", topic_prefix="u-", topic_partitions=4)  # type: ignore[arg-type]


def fits(w: WantedTopic, rf: int = 3) -> ExistingTopic:
    return ExistingTopic(w.name, w.partitions, rf, "compact" if w.compacted else "delete", 2)


def test_every_topic_is_wanted_with_the_prefix_and_the_stream_workers_own_topics() -> None:
    names = {w.name for w in wanted_topics(S)}
    assert "u-agent.steps" in names and "u-agent.steps.dlq" in names
    assert "u-agentlake-streams-__assignor-__leader" in names
    assert all(n.startswith("u-") for n in names)


def test_the_stream_workers_own_topics_are_the_ones_its_faust_app_declares() -> None:
    from agentlake.streams.app import create_app

    app = create_app(S, broker="kafka://127.0.0.1:9")
    wanted = {w.name: w for w in wanted_topics(S)}
    for table in app.tables.values():
        w = wanted[table.changelog_topic.get_topic_name()]
        assert w.compacted and w.exact_partitions
    assert wanted[app._leader_assignor._leader_topic_name].partitions == 1  # type: ignore[attr-defined]


def test_topics_that_fit_raise_no_problem() -> None:
    wanted = wanted_topics(S)
    assert problems(wanted, {w.name: fits(w) for w in wanted}, 3, 2) == []


def test_a_log_topic_with_more_partitions_fits_but_a_co_partitioned_one_must_match() -> None:
    wanted = {w.name: w for w in wanted_topics(S)}
    dlq, steps = wanted["u-agent.steps.dlq"], wanted["u-agent.steps"]
    bigger = {n: ExistingTopic(n, 8, 1) for n in (dlq.name, steps.name)}
    out = problems([dlq, steps], bigger, 1, None)
    assert len(out) == 1 and out[0].startswith("topic u-agent.steps has 8 partitions but AgentLake needs")
    fewer = problems([dlq], {dlq.name: ExistingTopic(dlq.name, 2, 1)}, 1, None)
    assert fewer and "fewer than AGENTLAKE_TOPIC_PARTITIONS=4" in fewer[0]


def test_cleanup_policy_is_checked_both_ways() -> None:
    wanted = {w.name: w for w in wanted_topics(S)}
    reg, steps = wanted["u-registry.agents"], wanted["u-agent.steps"]
    out = problems(
        [reg, steps],
        {
            reg.name: ExistingTopic(reg.name, 4, 1, "delete"),
            steps.name: ExistingTopic(steps.name, 4, 1, "compact"),
        },
        1,
        None,
    )
    assert "set cleanup.policy=compact" in out[0]
    assert "would drop events of the log" in out[1]
    both = problems([steps], {steps.name: ExistingTopic(steps.name, 4, 1, "compact,delete")}, 1, None)
    assert both and "cleanup.policy=compact,delete" in both[0]


def test_too_few_copies_and_a_low_min_insync_are_reported() -> None:
    w = wanted_topics(S)[0]
    out = problems([w], {w.name: ExistingTopic(w.name, 4, 1, "delete", 1)}, 3, 2)
    assert "has 1 copy but 3 are needed" in out[0]
    assert "min.insync.replicas=1, fewer than AGENTLAKE_TOPIC_MIN_INSYNC_REPLICAS=2" in out[1]
    # unset min.insync: whatever the topic has is accepted
    assert problems([w], {w.name: ExistingTopic(w.name, 4, 3, "delete", 1)}, 3, None) == []


def test_missing_topics_are_not_problems() -> None:
    assert problems(wanted_topics(S), {}, 3, 2) == []


def test_created_config_carries_policy_and_min_insync() -> None:
    wanted = {w.name: w for w in wanted_topics(S)}
    assert create_config(wanted["u-registry.agents"], 2) == {
        "cleanup.policy": "compact",
        "min.insync.replicas": "2",
    }
    # trajectory topics are capped where data enters (README: Limits)
    assert create_config(wanted["u-agent.steps"], None) == {
        "cleanup.policy": "delete",
        "max.message.bytes": str(S.max_event_bytes),
    }


def test_impossible_replication_settings_fail_before_anything_is_created() -> None:
    check_settings(3, 2, 3)
    with pytest.raises(TopicError, match="cluster has 1"):
        check_settings(3, None, 1)
    with pytest.raises(TopicError, match="exceeds the replication factor 1"):
        check_settings(1, 2, 3)


def test_settings_reject_a_zero_replication_factor_and_a_bad_cluster_name() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Settings(topic_replication_factor=0)
    with pytest.raises(ValidationError):
        Settings(clickhouse_cluster="a b; DROP")


def test_replication_is_the_setting_else_one_embedded_else_the_clusters_default() -> None:
    from agentlake.topic_admin import resolve_replication

    external = Settings(kafka_bootstrap_servers="k1:9092,k2:9092")
    embedded = Settings(kafka_bootstrap_servers=None)
    assert resolve_replication(Settings(topic_replication_factor=2), 3) == 2
    assert resolve_replication(embedded, 3) == 1  # the single local broker
    assert resolve_replication(external, 3) == 3
    with pytest.raises(TopicError, match="set AGENTLAKE_TOPIC_REPLICATION_FACTOR"):
        resolve_replication(external, None)
