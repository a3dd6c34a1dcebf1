"""Shared fixtures. Integration tests get a real Kafka broker started for the session.

In CI (``CI=true``) a component that cannot start is a failure, never a skip.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator

import pytest

from agentlake._net import free_port_pair

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
logging.getLogger("milvus_lite").setLevel(logging.WARNING)  # it logs at interpreter exit


def require(condition: bool, what: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} (CI=true: missing components fail the run)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real local stack for the whole session: broker, topics, stream worker.

    With KAFKA_BOOTSTRAP_SERVERS set, that cluster is used with a unique topic prefix.
    The environment variables are set for this process and its children, so
    `Settings()` and the worker subprocess agree on everything.
    """
    from agentlake import stack
    from agentlake.settings import Settings

    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not external:
        require(shutil.which("java") is not None, "java is not installed: no local Kafka broker")
        require(shutil.which("mvn") is not None or _jars_cached(), "mvn is not installed: cannot fetch Kafka")
    home = tmp_path_factory.mktemp("agentlake-home")
    env = {
        "AGENTLAKE_HOME": str(home),
        "AGENTLAKE_TOPIC_PARTITIONS": "4",
        "AGENTLAKE_SINK_BATCH_MS": "100",
    }
    if external:
        env["AGENTLAKE_TOPIC_PREFIX"] = f"t{os.getpid()}-"
    else:
        env["AGENTLAKE_KAFKA_PORT"] = str(free_port_pair())
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s = Settings()
    try:
        stack.up(s, workers=True)
        yield env
    finally:
        stack.down(s)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _jars_cached() -> bool:
    from agentlake.settings import Settings

    s = Settings()
    return (s.cache_dir / "kafka" / s.kafka_version / "libs").exists()
