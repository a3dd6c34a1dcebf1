"""`agentlake up` against a real broker: creation errors surface, misfit topics are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from agentlake import stack
from agentlake.settings import Settings
from agentlake.topic_admin import wanted_topics


def _settings(settings: Settings, prefix: str, **kw: object) -> Settings:
    return Settings(  # type: ignore[arg-type]
        home=settings.home,
        kafka_bootstrap_servers=settings.bootstrap_servers,
        topic_prefix=prefix,
        **kw,
    )


def test_an_invalid_topic_name_fails_up_with_one_line_and_exit_2(settings: Settings) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "AGENTLAKE_TOPIC_PREFIX": "bad/",
    }
    r = subprocess.run(
        [sys.executable, "-m", "agentlake", "up", "--no-workers", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot create topic 'bad/agent.trajectories': InvalidTopicError" in lines[0]


async def test_topics_are_created_then_verified_and_misfits_refused(settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    prefix = f"vt{uuid.uuid4().hex[:6]}-"
    s = _settings(settings, prefix)
    # a topic someone created by hand, as a log, where AgentLake keeps a table
    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(f"{prefix}registry.agents", 4, 1, topic_configs={"cleanup.policy": "delete"})]
        )
    finally:
        await admin.close()
    with pytest.raises(stack.StackError, match=f"topic {prefix}registry.agents has cleanup.policy=delete"):
        await stack._ensure_topics(s)

    fresh = _settings(settings, f"vt{uuid.uuid4().hex[:6]}-")
    report = await stack._ensure_topics(fresh)
    assert sorted(report.created) == sorted(w.name for w in wanted_topics(fresh))
    assert report.replication_factor == 1  # the single broker's default
    # a second `up` creates nothing and finds everything fitting
    again = await stack._ensure_topics(fresh)
    assert again.created == [] and again.checked == len(report.created)
    # the same topics with another partition count do not fit
    with pytest.raises(stack.StackError, match="has 4 partitions but AgentLake needs exactly 8"):
        await stack._ensure_topics(_settings(settings, fresh.topic_prefix, topic_partitions=8))
    with pytest.raises(stack.StackError, match=r"has 1 copy but 2 are needed|needs as many brokers"):
        await stack._ensure_topics(_settings(settings, fresh.topic_prefix, topic_replication_factor=2))


def test_up_reports_the_replication_it_used(settings: Settings) -> None:
    info = stack.up(_settings(settings, f"vt{uuid.uuid4().hex[:6]}-"), workers=False)
    assert json.loads(json.dumps(info))["replication_factor"] == 1
    assert info["min_insync_replicas"] is None
