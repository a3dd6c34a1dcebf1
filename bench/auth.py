"""Agent auth benchmark: authorization decisions, gateway overhead, revocation propagation.

    .venv/bin/python bench/auth.py [--decisions 20000] [--calls 2000] [--revocations 50] [--no-kafka]
                                   [--only decisions|gateway|revocation] [--json]

Stages (same process, same run):

1. decisions: `Verifier.authorize` on a base64 token (parse + signature check +
   revocation set + Datalog), for a root token, a 2-hop delegated token and a
   token with an approval (third-party) block: decisions/s and p50/p99.
2. gateway overhead per tool call: an MCP client calling an in-memory MCP server
   directly, versus the same client calling it through the gateway (in memory:
   client -> gateway MCP server -> authorization + events -> upstream client ->
   server). Side by side, alternating, p50/p99 of each and of the difference.
3. revoke -> denied propagation (needs Kafka, starts its own stack in a temp dir):
   time from `Authority.revoke` (event produced, acks=all) until a gateway's
   `AuthFollower` has the id in its revocation set, so the next call is denied.
   Split into revoke -> acknowledged by the broker (the producer's share) and
   acknowledged -> in the set (the follower's share). The first revocation
   (producer connection and topic metadata) is reported apart from the others.

Never run as a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import biscuit_auth as ba
from mcp import Client
from rich.console import Console
from rich.table import Table

from agentlake._net import free_port_pair
from agentlake.auth.approval import ApprovalService
from agentlake.auth.authority import Authority
from agentlake.auth.demo import demo_shop
from agentlake.auth.events import AuthEvents
from agentlake.auth.gateway import Gateway, GatewayConfig, WithMeta
from agentlake.auth.keys import KeyRing
from agentlake.auth.policy import Attenuation, Grant, Request, TokenSpec

console = Console(stderr=True)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def spec(**kw: Any) -> TokenSpec:
    base: dict[str, Any] = {
        "user": "alice",
        "agent": "support-bot",
        "grants": (Grant("shop", "get_order"), Grant("shop", "refund_order", "write")),
        "expires": datetime.now(UTC) + timedelta(hours=1),
        "task": "bench",
        "budget": 10**9,
    }
    base.update(kw)
    return TokenSpec(**base)


def bench_decisions(auth: Authority, n: int) -> dict[str, Any]:
    approver = ApprovalService(ba.KeyPair())
    root = auth.mint(spec())
    hop2 = auth.attenuate(
        auth.attenuate(root, Attenuation(delegate="a", tools=(("shop", "get_order"),))),
        Attenuation(delegate="b", operations=("read",)),
    )
    gated = auth.parse(auth.mint(spec(approval_tools=("refund_order",), approver_key=approver.public_key)))
    approved = approver.grant(approver.request(gated, "shop", "refund_order", "bench", "x").request_id, "m")
    read = Request("shop", "get_order", "read", "shop/get_order", "bench", {"order_id": 7})
    write = Request("shop", "refund_order", "write", "shop/refund_order", "bench", {"order_id": 7})
    out: dict[str, Any] = {}
    for name, token, req in (
        ("root token", root, read),
        ("2-hop delegation", hop2, read),
        ("approval block", approved, write),
    ):
        assert auth.verify(token, req).allowed
        lat = []
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            s = time.perf_counter_ns()
            auth.verify(token, req)
            lat.append((time.perf_counter_ns() - s) / 1e6)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out[name] = {
            "decisions_per_s": n / wall,
            "p50_ms": pct(lat, 0.5),
            "p99_ms": pct(lat, 0.99),
            # CPU time is what a decision costs whatever the machine's load (wall-clock p99 is not)
            "cpu_ms_per_decision": cpu * 1000 / n,
            "decisions_per_cpu_s": n / cpu,
        }
    return out


async def bench_gateway(auth: Authority, n: int) -> dict[str, Any]:
    token = auth.mint(spec())
    async with Client(demo_shop()) as direct, Client(demo_shop()) as upstream:
        gw = Gateway(upstream, GatewayConfig("shop"), auth.verifier, AuthEvents())
        async with Client(gw.server) as via:
            guarded = WithMeta(via, token, task="bench")
            for _ in range(50):  # warm up both paths
                await direct.call_tool("get_order", {"order_id": 7})
                await guarded.call_tool("get_order", {"order_id": 7})
            d_lat, g_lat = [], []
            d_cpu = g_cpu = 0.0
            for _ in range(n):
                c = time.process_time()
                s = time.perf_counter_ns()
                await direct.call_tool("get_order", {"order_id": 7})
                d_lat.append((time.perf_counter_ns() - s) / 1e6)
                c2 = time.process_time()
                d_cpu += c2 - c
                s = time.perf_counter_ns()
                r = await guarded.call_tool("get_order", {"order_id": 7})
                g_lat.append((time.perf_counter_ns() - s) / 1e6)
                g_cpu += time.process_time() - c2
                assert not r.is_error
            in_process = []
            for _ in range(n):
                s = time.perf_counter_ns()
                await gw.call(token, "get_order", {"order_id": 7}, task="bench")
                in_process.append((time.perf_counter_ns() - s) / 1e6)
            auth_only = []
            for _ in range(n):
                s = time.perf_counter_ns()
                gw.decide(token, "get_order", {"order_id": 7}, "read", "bench", call_id="c")
                auth_only.append((time.perf_counter_ns() - s) / 1e6)
    return {
        "direct_p50_ms": pct(d_lat, 0.5),
        "direct_p99_ms": pct(d_lat, 0.99),
        "gateway_p50_ms": pct(g_lat, 0.5),
        "gateway_p99_ms": pct(g_lat, 0.99),
        "added_p50_ms": pct(g_lat, 0.5) - pct(d_lat, 0.5),
        "added_p99_ms": pct(g_lat, 0.99) - pct(d_lat, 0.99),
        "added_mean_ms": statistics.fmean(g_lat) - statistics.fmean(d_lat),
        "direct_cpu_ms_per_call": d_cpu * 1000 / n,
        "gateway_cpu_ms_per_call": g_cpu * 1000 / n,
        "gateway_call_in_process_p50_ms": pct(in_process, 0.5),
        "gateway_call_in_process_p99_ms": pct(in_process, 0.99),
        "decide_and_emit_p50_ms": pct(auth_only, 0.5),
        "decide_and_emit_p99_ms": pct(auth_only, 0.99),
    }


def bench_revocation(n: int) -> dict[str, Any]:
    from agentlake import stack
    from agentlake.auth.follow import AuthFollower
    from agentlake.auth.verify import RevocationSet
    from agentlake.sdk import KafkaEmitter
    from agentlake.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="agentlake-bench-auth-"))
    os.environ["AGENTLAKE_HOME"] = str(home)
    os.environ["AGENTLAKE_KAFKA_PORT"] = str(free_port_pair())
    settings = Settings()
    console.log(f"stack in {home}")
    stack.up(settings, workers=False)
    emitter = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir, linger_ms=0)
    live = RevocationSet()
    follower = AuthFollower(settings, live, poll_ms=10).start()
    try:
        auth = Authority(KeyRing(home / "keys"), AuthEvents(emitter, topic=settings.topic))
        tokens = [auth.mint(spec()) for _ in range(n + 1)]
        emitter.flush(30)
        total, acked_ms, follow_ms = [], [], []
        for token in tokens:
            before = emitter.stats.acked
            s = time.perf_counter()
            rid = auth.revoke(token)
            acked = None
            while rid not in live:
                if acked is None and emitter.stats.acked > before:
                    acked = time.perf_counter()
                time.sleep(0.0005)
            seen = time.perf_counter()
            acked = acked or seen  # seen before the ack was noticed: the follower's share is ~0
            total.append((seen - s) * 1000)
            acked_ms.append((acked - s) * 1000)
            follow_ms.append((seen - acked) * 1000)
        first = total[0]
        total, acked_ms, follow_ms = total[1:], acked_ms[1:], follow_ms[1:]
        return {
            "revocations": n,
            "p50_ms": pct(total, 0.5),
            "p99_ms": pct(total, 0.99),
            "max_ms": max(total),
            "first_ms": first,
            "to_ack_p50_ms": pct(acked_ms, 0.5),
            "to_ack_p99_ms": pct(acked_ms, 0.99),
            "ack_to_set_p50_ms": pct(follow_ms, 0.5),
            "ack_to_set_p99_ms": pct(follow_ms, 0.99),
            "load_average": os.getloadavg(),
        }
    finally:
        follower.stop()
        emitter.close(10)
        stack.down(settings)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decisions", type=int, default=20_000)
    ap.add_argument("--calls", type=int, default=2_000)
    ap.add_argument("--revocations", type=int, default=50)
    ap.add_argument("--no-kafka", action="store_true", help="skip the revocation stage")
    ap.add_argument(
        "--only", choices=("decisions", "gateway", "revocation"), help="run one stage (default: all)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    auth = Authority(KeyRing(Path(tempfile.mkdtemp(prefix="agentlake-bench-keys-"))), AuthEvents())
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    }
    if args.only in (None, "decisions"):
        console.log(f"{args.decisions} decisions per token shape")
        results["decisions"] = bench_decisions(auth, args.decisions)
    if args.only in (None, "gateway"):
        console.log(f"{args.calls} tool calls, direct and through the gateway")
        results["gateway"] = asyncio.run(bench_gateway(auth, args.calls))
    if args.only == "revocation" or (args.only is None and not args.no_kafka):
        console.log(f"{args.revocations} revocations through Kafka")
        results["revocation"] = bench_revocation(args.revocations)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    t = Table(title=f"agent auth ({results['machine']})")
    t.add_column("measure")
    t.add_column("wall p50 / p99", justify="right")
    t.add_column("CPU per op", justify="right")
    t.add_column("rate", justify="right")
    for name, r in results.get("decisions", {}).items():
        t.add_row(
            f"decision, {name}",
            f"{r['p50_ms']:.3f} / {r['p99_ms']:.3f} ms",
            f"{r['cpu_ms_per_decision']:.3f} ms",
            f"{r['decisions_per_s']:,.0f}/s ({r['decisions_per_cpu_s']:,.0f}/CPU-s)",
        )
    g = results.get("gateway")
    if g is not None:
        for label, key, cpu in (
            ("MCP call, direct (in memory)", "direct", "direct_cpu_ms_per_call"),
            ("MCP call, through the gateway", "gateway", "gateway_cpu_ms_per_call"),
            ("added per call", "added", None),
            ("Gateway.call in process", "gateway_call_in_process", None),
            ("gateway decision + event", "decide_and_emit", None),
        ):
            cpu_cell = f"{g[cpu]:.3f} ms" if cpu else ""
            t.add_row(label, f"{g[key + '_p50_ms']:.3f} / {g[key + '_p99_ms']:.3f} ms", cpu_cell, "")
    if "revocation" in results:
        r = results["revocation"]
        t.add_row(
            "revoke → in the gateway's set",
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms",
            "",
            f"max {r['max_ms']:.1f} ms, first {r['first_ms']:.1f} ms",
        )
        t.add_row("  revoke → broker ack", f"{r['to_ack_p50_ms']:.1f} / {r['to_ack_p99_ms']:.1f} ms", "", "")
        t.add_row(
            "  broker ack → in the set",
            f"{r['ack_to_set_p50_ms']:.1f} / {r['ack_to_set_p99_ms']:.1f} ms",
            "",
            "",
        )
    Console().print(t)


if __name__ == "__main__":
    main()
