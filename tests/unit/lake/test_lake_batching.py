"""Lookups answered together (one embedding call, one faiss search per tenant) give exactly
the answers of the same lookups one at a time: `Lake.lookup_many` and the HTTP server's
`LookupBatcher`."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import numpy as np
import pytest

from agentlake.lake.batcher import LookupBatcher
from agentlake.lake.cache import Lake, LookupRequest, LookupResult
from agentlake.lake.hot import SEARCH_BATCH
from agentlake.projections.embeddings import Embedder
from tests.unit.lake.conftest import T0, make_entry

TASKS = [
    "Refund order 48213, it arrived broken.",
    "Please refund order 48213 because it arrived damaged",
    "Refund order 48214, it arrived broken.",
    "Approve the expense report ER-2291 for $1,250",
    "Reject the expense report ER-2291 for $1,250",
    "Deploy build 342 to production",
    "Roll back build 342 in production",
    "Grant the admins group access to the billing dashboard",
    "Move the 10:00 meeting with Priya from Monday to Tuesday",
]


def build(embedder: Embedder) -> Lake:
    """Tenant ``acme``: an IVF index (filler vectors + the tasks above, embedded); tenant
    ``small``: an exact index; tenant ``none``: no entries left."""
    lake = Lake(embedder, clock=lambda: T0 + 1, ivf_min=64)
    rng = np.random.default_rng(3)
    filler = rng.normal(size=(300, embedder.dim)).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    lake.add([make_entry(f"f{i}", TASKS[i % len(TASKS)]) for i in range(len(filler))], filler)
    lake.add([make_entry(f"t{i}", task) for i, task in enumerate(TASKS)])
    lake.add([make_entry("other-tools", TASKS[0], toolset="other")])
    lake.add([make_entry(f"s{i}", task, tenant="small") for i, task in enumerate(TASKS[:4])])
    lake.add([make_entry("gone", TASKS[0], tenant="none")])
    lake.remove("none", ["gone"])
    return lake


def requests() -> list[LookupRequest]:
    out = [LookupRequest("acme", task) for task in TASKS]
    out += [LookupRequest("acme", TASKS[0], toolset="other"), LookupRequest("acme", TASKS[0])]  # a repeat
    out += [LookupRequest("small", task) for task in TASKS[2:6]]
    out += [LookupRequest("none", TASKS[0]), LookupRequest("nobody", TASKS[1])]
    out += [LookupRequest("acme", f"Refund order {n}, it arrived broken.") for n in range(40)]
    return out


def answers(results: list[LookupResult]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        d = r.to_dict()
        d.pop("latency_us")
        out.append(d)
    return out


def events(lake: Lake) -> list[tuple[str, str, dict[str, Any]]]:
    return [(r, k, {**v, "latency_us": None}) for r, k, v in lake.drain_events() if r == "LakeLookup"]


@pytest.fixture
def lakes(embedder: Embedder) -> tuple[Lake, Lake]:
    a, b = build(embedder), build(embedder)
    part = a.hot.tenant("acme")
    assert part is not None and part.is_ivf  # both index kinds are covered
    small = a.hot.tenant("small")
    assert small is not None and not small.is_ivf
    return a, b


def test_lookup_many_answers_like_single_lookups(
    lakes: tuple[Lake, Lake], monkeypatch: pytest.MonkeyPatch
) -> None:
    one_by_one, together = lakes
    reqs = requests()
    assert len([r for r in reqs if r.tenant == "acme"]) > SEARCH_BATCH  # faiss is called in slices
    expected = answers([one_by_one.lookup(r) for r in reqs])
    got = answers(together.lookup_many(reqs))
    assert got == expected
    reasons = {d["reason"] for d in got}
    assert {"hit", "empty_tenant", "below_threshold"} <= reasons
    assert events(together) == events(one_by_one)  # the same LakeLookup events, the same ids
    # the new task vectors were remembered: a second batch embeds nothing
    calls: list[list[str]] = []
    real = together.embedder.embed
    monkeypatch.setattr(together.embedder, "embed", lambda texts: calls.append(texts) or real(texts))
    together.lookup_many(reqs)
    assert calls == []


def test_given_vectors_are_used(lakes: tuple[Lake, Lake]) -> None:
    a, b = lakes
    reqs = [LookupRequest("acme", t) for t in TASKS[:3]]
    vecs = [np.asarray(a.embedder.embed([TASKS[5]])[0]), None, None]  # the first asks with another vector
    expected = answers([a.lookup(r, vector=v) for r, v in zip(reqs, vecs, strict=True)])
    assert answers(b.lookup_many(reqs, vecs)) == expected
    assert expected[0]["hit"] is False and expected[1]["hit"] is True


async def test_batcher_answers_concurrent_lookups_together(lakes: tuple[Lake, Lake]) -> None:
    one_by_one, batched = lakes
    reqs = requests()
    expected = answers([one_by_one.lookup(r) for r in reqs])
    batcher = LookupBatcher(batched, max_batch=16)
    got = answers(await asyncio.gather(*[batcher.lookup(r) for r in reqs]))
    assert got == expected
    assert batcher.lookups == len(reqs) and batcher.batches == -(-len(reqs) // 16)  # 16 at a time
    lone = await batcher.lookup(reqs[0])  # nothing else queued: answered as the loop turns
    assert lone.hit and batcher.batches == -(-len(reqs) // 16) + 1


async def test_batcher_hands_an_error_to_every_waiting_request(
    lakes: tuple[Lake, Lake], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, _ = lakes

    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("embedder down")

    monkeypatch.setattr(lake.embedder, "embed", broken)
    batcher = LookupBatcher(lake)
    out = await asyncio.gather(
        *[batcher.lookup(LookupRequest("acme", f"new task {i}")) for i in range(3)],
        return_exceptions=True,
    )
    assert [str(e) for e in out] == ["embedder down"] * 3
    empty = await batcher.lookup(LookupRequest("nobody", "new task"))  # nothing to embed
    assert empty.reason == "empty_tenant"


def test_max_batch_must_be_positive(lakes: tuple[Lake, Lake]) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        LookupBatcher(lakes[0], max_batch=0)


async def test_app_freezes_the_gc_only_when_asked(lakes: tuple[Lake, Lake], tmp_path: Any) -> None:
    from agentlake.lake.http_api import create_app
    from agentlake.lake.service import LakeService
    from agentlake.settings import Settings

    svc = LakeService(Settings(home=tmp_path), embedder=lakes[0].embedder, kafka=False, milvus=False)
    gc.unfreeze()
    try:
        app = create_app(svc, manage=False)
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() == 0
        app = create_app(svc, manage=False, freeze_gc=True)
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the rest of the test process keeps its collector
