"""Sentence embeddings behind one small interface.

The default, ``wordllama``, ships its 256-d weights and tokenizer inside the
wheel: numpy inference, nothing downloaded, ~40 µs of CPU per short text. Others plug
in by configuration (``AGENTLAKE_EMBEDDER``):

- ``sentence-transformers:<model or path>`` — needs the ``sentence-transformers``
  extra and a model available locally;
- ``openai:<model>`` — any OpenAI-compatible ``/v1/embeddings`` endpoint
  (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agentlake.settings import Settings


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalized float32 vectors, one row per text."""
        ...


def _normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.asarray(v / norms, dtype=np.float32)


class WordLlamaEmbedder:
    """wordllama's bundled ``l2_supercat`` model, loaded offline.

    The wheel ships the 256-d weights only; a smaller `dim` is their Matryoshka
    truncation (wordllama's ``trunc_dim``).

    Raises:
        ValueError: `dim` is not between 1 and 256.
    """

    SMALL_BATCH = 64  # texts embedded one by one below this many (the same vectors either way)

    def __init__(self, cache_dir: Path, dim: int = 256) -> None:
        if not 1 <= dim <= 256:
            raise ValueError(
                f"AGENTLAKE_EMBEDDER=wordllama:{dim}: wordllama ships its 256-d weights only; "
                "use wordllama (256) or wordllama:<d> with d < 256 (a truncation, e.g. 128 or 64)"
            )
        import wordllama
        from wordllama import WordLlama

        pkg = Path(wordllama.__file__).parent
        # wordllama 0.4 looks for its bundled tokenizer under another folder name and would
        # then try a download: lay the bundled files out where it looks.
        for kind, src in (
            ("tokenizer", pkg / "tokenizers" / "l2_supercat_tokenizer_config.json"),
            ("weights", pkg / "weights" / "l2_supercat_256.safetensors"),
        ):
            dest_dir = WordLlama.get_file_path(kind, cache_dir)
            dest_dir.mkdir(parents=True, exist_ok=True)
            dest = dest_dir / src.name
            if not dest.exists():
                shutil.copyfile(src, dest)
        self._model = WordLlama.load(
            cache_dir=cache_dir, disable_download=True, dim=256, trunc_dim=dim if dim < 256 else None
        )
        self.dim = dim
        self.name = f"wordllama:l2_supercat-{dim}"

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) <= self.SMALL_BATCH:
            # a few texts (a lookup's task, a batch of concurrent lookups): one at a time is
            # cheaper than wordllama's batch path, which hands them to a thread pool
            return _normalize(np.stack([self._embed_one(t) for t in texts]))
        return _normalize(self._model.embed(texts))

    def _embed_one(self, text: str) -> np.ndarray:
        """wordllama's mean of token vectors for one text, without its batch path (``encode_batch``
        hands even one text to a thread pool: twice the CPU of ``encode`` on a lookup's task).
        The same arithmetic in the same order, so the same float32 vector."""
        table = self._model.embedding
        ids = np.asarray(self._model.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        np.clip(ids, 0, table.shape[0] - 1, out=ids)
        pooled = table[ids].sum(axis=0, dtype=np.float32) / np.float32(max(len(ids), 1))
        return np.asarray(pooled, dtype=np.float32)


class SentenceTransformerEmbedder:
    def __init__(self, model: str) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise RuntimeError(
                "AGENTLAKE_EMBEDDER=sentence-transformers:... needs "
                "`pip install agentlake[sentence-transformers]`"
            ) from e
        self._model = SentenceTransformer(model)
        self.dim = int(self._model.get_sentence_embedding_dimension())
        self.name = f"sentence-transformers:{model}"

    def embed(self, texts: list[str]) -> np.ndarray:
        return _normalize(self._model.encode(texts, normalize_embeddings=True))


class OpenAIEmbedder:
    """Calls ``POST {base_url}/embeddings`` (OpenAI wire format)."""

    def __init__(self, model: str, base_url: str, api_key: str | None) -> None:
        import httpx

        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=30.0,
        )
        self.model = model
        self.name = f"openai:{model}"
        self.dim = int(self.embed(["dimension probe"]).shape[1])

    def embed(self, texts: list[str]) -> np.ndarray:
        r = self._client.post("/embeddings", json={"model": self.model, "input": texts})
        if r.status_code != 200:
            raise RuntimeError(f"embeddings endpoint answered {r.status_code}: {r.text[:200]}")
        data: list[dict[str, Any]] = sorted(r.json()["data"], key=lambda d: d["index"])
        return _normalize(np.array([d["embedding"] for d in data], dtype=np.float32))


_embedders: dict[str, Embedder] = {}


def get_embedder(settings: Settings) -> Embedder:
    """The configured embedder (built once per process)."""
    spec = settings.embedder
    if spec in _embedders:
        return _embedders[spec]
    kind, _, arg = spec.partition(":")
    emb: Embedder
    if kind == "wordllama":
        emb = WordLlamaEmbedder(settings.cache_dir / "wordllama", dim=int(arg) if arg else 256)
    elif kind == "sentence-transformers":
        emb = SentenceTransformerEmbedder(arg or "all-MiniLM-L6-v2")
    elif kind == "openai":
        if not settings.embeddings_url:
            raise RuntimeError(
                "AGENTLAKE_EMBEDDER=openai:... needs OPENAI_BASE_URL (or AGENTLAKE_EMBEDDINGS_URL)"
            )
        emb = OpenAIEmbedder(
            arg or "text-embedding-3-small", settings.embeddings_url, settings.embeddings_api_key
        )
    else:
        raise RuntimeError(
            f"AGENTLAKE_EMBEDDER={spec!r}: use wordllama, sentence-transformers:<model> or openai:<model>"
        )
    _embedders[spec] = emb
    return emb
