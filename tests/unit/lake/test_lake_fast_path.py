"""The lookup's fast path answers exactly what the plain one did: remembered signatures and
query vectors, the candidates past the provenance, the lean HTTP route."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from agentlake.lake import api
from agentlake.lake import cache as cache_module
from agentlake.lake.cache import PROVENANCE, Lake, LakePolicy, LookupRequest
from agentlake.lake.http_api import create_app
from agentlake.lake.service import LakeService
from agentlake.lake.signature import QUERY_CACHE_MAX_CHARS, query_signature, task_signature
from agentlake.projections.embeddings import Embedder
from agentlake.settings import Settings
from tests.unit.lake.conftest import T0, make_entry

DIM = 8


class CountingEmbedder:
    """Deterministic vectors (seeded by the text) and a count of the texts embedded."""

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self.name = "counting"
        self.calls: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += texts
        out = np.stack([np.random.default_rng(sum(t.encode())).normal(size=self.dim) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def unit(*xs: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def test_query_signature_is_the_extracted_one_and_remembered() -> None:
    task = "Move the 10:00 meeting with Priya from Monday to Tuesday"
    first = query_signature(task)
    assert first == task_signature(task)
    assert query_signature(task) is first  # remembered, not extracted again
    long = "Refund order 48213. " + "x " * QUERY_CACHE_MAX_CHARS
    assert query_signature(long) == task_signature(long)
    assert query_signature(long) is not query_signature(long)  # too long to keep


def test_describe_is_computed_once_and_unchanged() -> None:
    sig = task_signature("Refund order 48213 to jane@example.com")
    assert sig.describe() == "refund[email=jane@example.com, num=48213]"
    assert sig.describe() is sig.describe()


def test_query_vector_is_remembered_read_only_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    emb = CountingEmbedder()
    lake = Lake(emb)
    v = lake.query_vector("refund order 1")
    assert np.array_equal(v, emb.embed(["refund order 1"])[0])
    emb.calls.clear()
    assert lake.query_vector("refund order 1") is v and emb.calls == []
    with pytest.raises(ValueError):
        v[0] = 1.0  # shared between lookups: nobody may change it
    monkeypatch.setattr(cache_module, "QUERY_CACHE_SIZE", 2)
    lake.query_vector("a")
    lake.query_vector("b")  # "refund order 1" is now the oldest of three: forgotten
    lake.query_vector("refund order 1")
    assert emb.calls == ["a", "b", "refund order 1"]
    other = CountingEmbedder()
    lake.embedder = other
    lake.query_vector("a")
    assert other.calls == ["a"]  # a new embedder's vectors are its own


def test_hit_past_the_reported_candidates_is_still_found() -> None:
    lake = Lake(CountingEmbedder(), LakePolicy(candidates=32), clock=lambda: T0 + 1)
    task = "Refund order 48213"
    refused = [make_entry(f"r{i}", task, toolset="other") for i in range(PROVENANCE + 2)]
    near = [unit(1.0, 0.01 * (i + 1)) for i in range(len(refused))]  # cosine > 0.99
    lake.add([*refused, make_entry("good", task)], np.stack([*near, unit(1.0, 0.9)]))  # 0.74
    res = lake.lookup(LookupRequest("acme", task), vector=unit(1.0))
    assert res.hit and res.entry is not None and res.entry.entry_id == "good"
    assert [c.verdict for c in res.candidates] == ["other_toolset"] * PROVENANCE
    lake.remove("acme", ["good"])
    lake.add([make_entry("low", task)], unit(1.0, 3.0)[None])  # in scope, cosine 0.32 < 0.45
    miss = lake.lookup(LookupRequest("acme", task), vector=unit(1.0))
    assert not miss.hit and miss.reason == "other_toolset" and len(miss.candidates) == PROVENANCE


def test_one_text_embeds_as_in_a_batch(embedder: Embedder) -> None:
    texts = ["Refund order 48213, it arrived broken.", "", "Überweise 50 € an Zoë ✓", "ok " * 300]
    texts += [f"Refund order {n}, it arrived broken." for n in range(100)]  # wordllama's batch path
    for batch in (texts[:4], texts):
        vectors = embedder.embed(batch)
        for i, text in enumerate(batch):
            assert np.array_equal(embedder.embed([text])[0], vectors[i])


@pytest.fixture
def service(embedder: Embedder, tmp_path: Any) -> LakeService:
    svc = LakeService(Settings(home=tmp_path), embedder=embedder, kafka=False, milvus=False)
    now = svc.lake.clock()
    svc.lake.add(
        [
            make_entry(
                "t1",
                "Please refund order 48213, it arrived broken.",
                produced_us=now,
                expires_us=now + 10**12,
            )
        ]
    )
    return svc


async def test_lean_lookup_route_answers_like_the_operation(service: LakeService) -> None:
    app = create_app(service, manage=False)
    body = {"tenant": "acme", "task": "Refund my order #48213, it came damaged."}
    expected = api.cache_lookup(service.lake, api.TaskQuery(**body))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lake") as c:
        r = await c.post("/v1/lookup", json=body)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        got = r.json()
        for key in ("lookup_id", "latency_us"):
            got.pop(key), expected.pop(key)
        assert got == expected and got["hit"]
        bad = await c.post("/v1/lookup", json={"tenant": "", "task": "x"})
        assert bad.status_code == 422
        [err] = bad.json()["detail"]
        assert err["loc"] == ["body", "tenant"] and err["type"] == "string_too_short"
        broken = await c.post(
            "/v1/lookup", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"
        assert (await c.get("/v1/lookup")).status_code == 405
        spec = (await c.get("/openapi.json")).json()
    schema = spec["paths"]["/v1/lookup"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/TaskQuery")
