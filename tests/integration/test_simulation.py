"""Simulation as CI against the real stack: registry, staging, runner, pipeline, gate,
replay, export, and every kind of agent under test."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from agentlake.cli import _sim_run, export_rows
from agentlake.consumers import Projector
from agentlake.registry import apply_specs, load_registry_file, read_registry
from agentlake.sdk import KafkaEmitter, Tracer
from agentlake.settings import Settings
from agentlake.sim import gate as g
from agentlake.sim.export import validate_chat_row, write_jsonl
from agentlake.sim.metrics import pass_hat_k
from agentlake.sim.replay import load_recorded
from agentlake.sim.runner import StagingFactory, replay, resolve_agent
from agentlake.sim.suite import expand, load_suite
from tests.integration.helpers import sql

EXAMPLES = Path(__file__).resolve().parents[2] / "agentlake" / "examples"
DATA = Path(__file__).resolve().parents[1] / "data"
SUITE = load_suite(EXAMPLES / "suite.yaml")


def agentlake(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentlake", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
async def registered(settings: Settings) -> None:
    await apply_specs(settings, load_registry_file(EXAMPLES / "registry.yaml"))
    await asyncio.sleep(1.0)  # the worker's registry follower polls every 100 ms


@pytest.fixture(scope="module")
async def baseline(settings: Settings, projector: Projector, registered: None) -> dict[str, Any]:
    tag = f"base-{uuid.uuid4().hex[:6]}"
    code, report = await _sim_run(
        settings,
        SUITE,
        expand(SUITE, 3),
        "support-bot@1.0",
        None,
        tag,
        8,
        False,
        [],
        0.0,
        180.0,
        projector=projector,
    )
    assert code == 0
    report["tag"] = tag
    return report


def test_registry_cli_apply_list_show_and_one_line_errors(settings: Settings) -> None:
    r = agentlake("registry", "apply", str(EXAMPLES / "registry.yaml"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["applied"] == 3
    listed = json.loads(agentlake("registry", "list", "--json").stdout)
    assert {(x["kind"], x["id"], x["version"]) for x in listed} >= {
        ("server", "shop", "1.0"),
        ("agent", "support-bot", "1.0"),
        ("agent", "support-bot", "1.1-beta"),
    }
    shown = json.loads(agentlake("registry", "show", "support-bot@1.0", "--json").stdout)
    assert shown["objective"] and {g["tool"] for g in shown["tools"]} == {
        "get_order",
        "refund_order",
        "cancel_order",
    }
    bad = agentlake("registry", "apply", str(EXAMPLES / "bad-registry.yaml"))
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "agents[0].tools[0].scope.order_id.max" in lines[0]
    missing = agentlake("registry", "show", "nobody@9", "--json")
    assert missing.returncode == 2 and "no agent nobody@9" in missing.stderr


async def test_the_stream_flags_out_of_scope_calls_in_production_traffic(
    settings: Settings, projector: Projector, registered: None
) -> None:
    run_id = f"prod-{uuid.uuid4().hex[:8]}"
    emitter = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "policy")
    tracer = Tracer("support-bot", "1.1-beta", emitter=emitter, settings=settings)
    with tracer.trajectory("refund order 20000", run_id=run_id) as t:
        with t.tool_call("shop", "search_orders", {"customer": "ada"}) as c:  # not granted
            c.result({"orders": []})
        with t.tool_call("shop", "refund_order", {"order_id": 20000}) as c:  # beyond the scope
            c.error("order 20000 not found")
        with t.tool_call("shop", "get_order", {"order_id": 7}) as c:  # fine
            c.result({"order_id": 7})
        t.end("failure")
    assert await asyncio.to_thread(emitter.flush, 30)
    emitter.close(5)

    async def done() -> bool:
        return bool(
            sql(projector, "SELECT 1 FROM rewards FINAL WHERE run_id={r:String} AND is_final=1", r=run_id)
        )

    assert await projector.run_until(done, timeout=120)
    await projector.catch_up(30)
    found = sql(
        projector,
        "SELECT tool, rule, detail FROM policy_violations FINAL "
        "WHERE trajectory_id = {t:String} ORDER BY seq",
        t=t.trajectory_id,
    )
    assert [(f["tool"], f["rule"]) for f in found] == [
        ("search_orders", "undeclared_tool"),
        ("refund_order", "out_of_scope"),
    ]
    assert "exceeds max 10000" in found[1]["detail"]
    [reward] = sql(
        projector,
        "SELECT components, reward_spec, flags FROM rewards FINAL "
        "WHERE trajectory_id={t:String} AND is_final=1",
        t=t.trajectory_id,
    )
    assert reward["reward_spec"] == "support@1"  # the registry's spec, not the default
    assert abs(reward["components"]["in_scope"] - 1 / 3) < 1e-9
    assert "undeclared_tool:search_orders" in reward["flags"]


async def test_gate_blocks_the_worse_candidate_and_reports_every_trial(
    settings: Settings, projector: Projector, baseline: dict[str, Any], tmp_path: Path
) -> None:
    planned = expand(SUITE, 3)
    assert len(baseline["trials"]) == len(planned)
    assert baseline["suite_metrics"]["pass_hat"][1] == 1.0
    code, report = await _sim_run(
        settings,
        SUITE,
        planned,
        "support-bot@1.1-beta",
        baseline["tag"],
        None,
        8,
        False,
        [],
        0.0,
        180.0,
        projector=projector,
    )
    assert code == 1 and report["passed"] is False
    assert report["baseline"] == baseline["run_id"]
    failed = {c["name"] for c in report["gate"] if not c["passed"]}
    assert {"pass_hat_1", "reward.task_success", "tool_calls"} <= failed
    # every trial is in the JSON, and the metrics can be recomputed from it
    assert len(report["trials"]) == len(planned)
    by_case: dict[str, list[bool]] = {}
    for t in report["trials"]:
        by_case.setdefault(t["scenario"], []).append(t["success"])
        assert {"task_success", "state_correctness", "in_scope"} <= set(t["components"])
        assert t["seed"] is not None and t["checks"]
        if not t["success"]:
            assert t["attribution"] in ("agent", "user", "tool", "grader")
    for k in (1, 2, 3):
        expected = sum(pass_hat_k(len(v), sum(v), k) for v in by_case.values()) / len(by_case)
        assert abs(report["suite_metrics"]["pass_hat"][k] - expected) < 1e-12
    # multi-turn: the beta agent never asks the user, the reference one does
    multi = [t for t in report["trials"] if t["scenario"].startswith("refund-multi-turn")]
    assert multi and not any(t["success"] for t in multi)
    base_multi = [t for t in baseline["trials"] if t["scenario"].startswith("refund-multi-turn")]
    assert base_multi and all(t["success"] for t in base_multi)
    # reports for CI
    junit = ET.fromstring(g.junit_xml(report))
    assert int(junit.get("failures") or 0) > 0
    md = g.markdown(report)
    assert "❌ failed" in md and "pass_hat_1" in md


async def test_the_same_version_passes_its_own_baseline(
    settings: Settings, projector: Projector, baseline: dict[str, Any]
) -> None:
    code, report = await _sim_run(
        settings,
        SUITE,
        expand(SUITE, 3),
        "support-bot@1.0",
        baseline["run_id"],
        None,
        8,
        False,
        [],
        0.0,
        180.0,
        projector=projector,
    )
    assert code == 0 and report["passed"] is True, [c for c in report["gate"] if not c["passed"]]


async def test_early_stop_skips_decided_cases_and_says_so(
    settings: Settings, projector: Projector, registered: None
) -> None:
    planned = expand(SUITE, 4)
    code, report = await _sim_run(
        settings,
        SUITE,
        planned,
        "support-bot@1.1-beta",
        None,
        None,
        2,
        True,
        [],
        0.0,
        180.0,
        projector=projector,
    )
    assert report["skipped"], "the suite's pass^1 floor is out of reach after the first failures"
    assert len(report["trials"]) + len(report["skipped"]) == len(planned) == report["planned"]
    assert all(s["scenario"].split("[")[0] in {sc.id for sc in SUITE.scenarios} for s in report["skipped"])
    assert code == 1
    # skipped trials count as failures: recompute pass^1 from the JSON over the planned trials
    ok = sum(t["success"] for t in report["trials"])
    by_case: dict[str, list[bool]] = {}
    for t in report["trials"]:
        by_case.setdefault(t["scenario"], []).append(t["success"])
    for s in report["skipped"]:
        by_case.setdefault(s["scenario"], []).append(False)
    expected = sum(sum(v) / len(v) for v in by_case.values()) / len(by_case)
    assert ok < len(planned) and abs(report["suite_metrics"]["pass_hat"][1] - expected) < 1e-12
    junit = g.junit_xml(report)
    xmlschema.XMLSchema(DATA / "junit.xsd").validate(junit)
    assert ET.fromstring(junit).find("testsuite").get("tests") == str(len(planned))  # type: ignore[union-attr]


async def test_injected_faults_are_blamed_on_staging_not_the_agent(
    settings: Settings, projector: Projector, registered: None
) -> None:
    _code, report = await _sim_run(
        settings,
        SUITE,
        expand(SUITE, 1),
        "support-bot@1.0",
        None,
        None,
        8,
        False,
        [],
        1.0,
        180.0,
        projector=projector,
    )
    failures = [t for t in report["trials"] if not t["success"]]
    assert failures
    assert all(t["attribution"] == "tool" for t in failures), [t["attribution"] for t in failures]
    # the evidence the gate compares with a baseline's: the seeded faults each trial met
    ids = [t["trajectory_id"] for t in failures]
    faults = await asyncio.to_thread(g.faults_of, projector.clickhouse, ids)
    assert set(faults) == set(ids)
    assert all(kind == "injected_error" for fs in faults.values() for _tool, kind in fs)


async def test_replay_serves_recorded_results_until_the_candidate_diverges(
    settings: Settings, projector: Projector, baseline: dict[str, Any]
) -> None:
    source = next(t for t in baseline["trials"] if t["scenario"].startswith("refund-delivered"))
    recorded = await asyncio.to_thread(load_recorded, projector.clickhouse, source["trajectory_id"])
    assert [c.tool for c in recorded.calls] == ["get_order", "refund_order"]
    registry = await read_registry(settings)
    emitter = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "replay")
    same = resolve_agent("support-bot@1.0", registry)
    rep = await replay(
        recorded,
        same,
        Tracer(same.agent_id, same.version, emitter=emitter, settings=settings),
        suite=SUITE,
        staging=StagingFactory.default(registry),
    )
    assert rep.replayed == 2 and rep.divergence is None and rep.result.verdict.success
    forked = await replay(
        recorded,
        same,
        Tracer(same.agent_id, same.version, emitter=emitter, settings=settings),
        suite=SUITE,
        fork_at=1,
    )
    assert forked.replayed == 1 and forked.divergence is not None and forked.divergence.step == 1
    beta = resolve_agent("support-bot@1.1-beta", registry)
    other = await replay(
        recorded, beta, Tracer(beta.agent_id, beta.version, emitter=emitter, settings=settings), suite=SUITE
    )
    assert other.replayed == 0 and other.divergence is not None and other.divergence.step == 0
    assert other.divergence.actual["tool"] == "search_orders"
    # live after the divergence: the state advanced and the refund really happened
    assert other.result.verdict.success
    assert await asyncio.to_thread(emitter.flush, 30)
    emitter.close(5)


async def test_export_writes_chat_rows_with_rewards(
    settings: Settings, projector: Projector, baseline: dict[str, Any], tmp_path: Path
) -> None:
    rows = await asyncio.to_thread(
        export_rows,
        projector.clickhouse,
        0.9,
        "support-bot@1.0",
        baseline["run_id"],
        True,
        1000,
        {"shop": [{"name": "get_order", "description": "d", "input_schema": {"type": "object"}}]},
    )
    expected = [t for t in baseline["trials"] if t["reward_raw"] >= 0.9 and t["success"]]
    assert len(rows) == len(expected) > 0
    out, side = tmp_path / "train.jsonl", tmp_path / "train.meta.jsonl"
    assert write_jsonl(rows, out, metadata=side) == len(rows)
    lines = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    meta = [json.loads(line) for line in side.read_text("utf-8").splitlines()]
    assert len(lines) == len(meta) == len(rows)
    for line, m in zip(lines, meta, strict=True):
        assert validate_chat_row(line) == [], line  # what OpenAI's fine-tuning accepts
        assert m["reward"]["total"] >= 0.9 and "metadata" not in line
        assert any(t["function"]["name"] == "get_order" for t in line["tools"])


async def test_an_external_process_agent_over_streamable_http(
    settings: Settings, projector: Projector, registered: None, tmp_path: Path
) -> None:
    script = tmp_path / "agent.py"
    script.write_text(
        textwrap.dedent("""
        import asyncio, json, os, re
        from mcp import Client

        async def main():
            task = os.environ["AGENTLAKE_TASK"]
            oid = int(re.search(r"(\\d+)", task).group(1))
            async with Client(os.environ["AGENTLAKE_MCP_URL"]) as c:
                await c.call_tool("get_order", {"order_id": oid})
                await c.call_tool("refund_order", {"order_id": oid})
            print(json.dumps({"answer": f"Order {oid} refunded.", "outcome": "success"}))

        asyncio.run(main())
    """)
    )
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        textwrap.dedent("""
        id: external
        trials: 1
        scenarios:
          - id: refund
            variables: {grid: {oid: [4]}}
            task: "Please refund order {oid}."
            initial_state:
              $generator: agentlake.sim.reference:shop_state
              args: {seed: 3, ensure: {"{oid}": delivered}}
            criteria:
              final_state: [{path: "orders.{oid}.status", equals: refunded}]
              tool_calls: {mode: strict, calls: [{tool: get_order}, {tool: refund_order}]}
              final_answer: {contains: ["{oid}"]}
    """)
    )
    suite = load_suite(suite_file)
    _code, report = await _sim_run(
        settings,
        suite,
        expand(suite),
        f"cmd:{sys.executable} {script}",
        None,
        None,
        1,
        False,
        [],
        0.0,
        180.0,
        projector=projector,
    )
    [trial] = report["trials"]
    assert trial["success"], trial
    assert trial["tool_calls"] == 2.0  # recorded on the server side, scored by the stream


async def test_an_openai_compatible_agent_loop(
    settings: Settings,
    projector: Projector,
    registered: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentlake.sim.staging import serve_asgi
    from tests.unit.test_llm_agents import KEY, FakeOpenAI

    fake = FakeOpenAI()
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        textwrap.dedent("""
        id: llm
        trials: 2
        scenarios:
          - id: refund
            variables: {grid: {oid: [9]}}
            task: "Please refund order {oid}, it arrived broken."
            initial_state:
              $generator: agentlake.sim.reference:shop_state
              args: {seed: 5, ensure: {"{oid}": delivered}}
            criteria:
              final_state: [{path: "orders.{oid}.status", equals: refunded}]
              final_answer: {contains: ["{oid}", "refunded"]}
    """)
    )
    suite = load_suite(suite_file)
    async with await serve_asgi(fake.app, "127.0.0.1", 0) as handle:
        monkeypatch.setenv("OPENAI_BASE_URL", handle.url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        _code, report = await _sim_run(
            settings,
            suite,
            expand(suite),
            "openai:support-model",
            None,
            None,
            2,
            False,
            [],
            0.0,
            180.0,
            projector=projector,
        )
    assert [t["success"] for t in report["trials"]] == [True, True]
    assert report["agent"] == "openai-agent@support-model"
    assert all(t["components"]["cost"] == 1.0 for t in report["trials"])  # tokens were reported
    sent = fake.requests[0]["body"]
    assert {t["function"]["name"] for t in sent["tools"]} == {
        "get_order",
        "refund_order",
        "cancel_order",
        "search_orders",
    }


def test_mcp_generate_from_openapi() -> None:
    doc = Path(__file__).resolve().parents[1] / "data" / "petstore-openapi.yaml"
    r = agentlake("mcp", "generate", "--openapi", str(doc), "--json")
    assert r.returncode == 0, r.stderr
    spec = json.loads(r.stdout)
    names = {t["name"] for t in spec["tools"]}
    assert {"listPets", "createPet", "showPetById"} <= names
    bad = agentlake("mcp", "generate", "--openapi", str(EXAMPLES / "suite.yaml"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_sim_run_cli_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nscenarios:\n  - id: a\n    task: 'hi {who}'\n    criteria: {outcome: success}\n")
    r = agentlake("sim", "run", str(bad), "--agent", "support-bot@1.0")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "who" in r.stderr
    r = agentlake("sim", "run", str(EXAMPLES / "suite.yaml"), "--agent", "nobody@1")
    assert r.returncode == 2 and "nobody@1" in r.stderr
    # staging specs: checked before the stack starts
    r = agentlake("sim", "run", str(EXAMPLES / "suite.yaml"), "--staging", str(tmp_path / "missing.yaml"))
    assert (
        r.returncode == 2
        and len(r.stderr.strip().splitlines()) == 1
        and "missing.yaml does not exist" in r.stderr
    )
    typo = tmp_path / "helpdesk.yaml"
    typo.write_text("name: helpdesk\nfaults: {error_rat: 0.4}\ntools: [{name: t}]\n")
    r = agentlake("sim", "run", str(EXAMPLES / "suite.yaml"), "--staging", str(typo))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "faults.error_rat" in r.stderr
    # a suite for a server nobody declared: a setup error before the first trial, not failed trials
    suite = tmp_path / "hd.yaml"
    suite.write_text(
        "id: hd\nscenarios:\n  - {id: a, server: helpdesk, task: t, criteria: {outcome: success}}\n"
    )
    r = agentlake("sim", "run", str(suite), "--agent", "support-bot@1.0")
    assert r.returncode == 2 and "no staging server 'helpdesk'" in r.stderr.strip().splitlines()[-1]
