"""The official Biscuit samples (specification test vectors) through our own verification path.

The samples live next to the repository, in ``../shared/conformance/biscuit/``
(``AGENTLAKE_BISCUIT_SAMPLES`` overrides the folder). Missing samples skip the
test locally and fail it under ``CI=true``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import biscuit_auth as ba
import pytest

from agentlake.auth.tokens import TokenError, parse
from agentlake.auth.verify import Limits, RevocationSet, authorizer_builder, run_authorizer
from tests.conftest import require

REPO = Path(__file__).resolve().parents[3]
SAMPLES = Path(
    os.environ.get("AGENTLAKE_BISCUIT_SAMPLES") or REPO.parent / "shared" / "conformance" / "biscuit"
)


def _cases() -> list[tuple[str, str, dict[str, Any]]]:
    index = SAMPLES / "samples.json"
    if not index.exists():
        return []
    data = json.loads(index.read_text())
    return [
        (case["filename"], name, validation)
        for case in data["testcases"]
        for name, validation in case["validations"].items()
    ]


CASES = _cases()


def _test(left: Any, right: Any = None) -> Any:
    """The samples' foreign function: identity when unary, string comparison when binary."""
    if right is None:
        return left
    return "equal strings" if left == right else "different strings"


def test_the_samples_are_there() -> None:
    require((SAMPLES / "samples.json").exists(), f"Biscuit conformance samples not found under {SAMPLES}")
    assert len(CASES) >= 50


@pytest.mark.parametrize(("filename", "name", "validation"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_sample(filename: str, name: str, validation: dict[str, Any]) -> None:
    meta = json.loads((SAMPLES / "samples.json").read_text())
    root = ba.PublicKey(f"ed25519/{meta['root_public_key']}")
    raw = (SAMPLES / filename).read_bytes()
    expected = validation["result"]
    # the project's path: parse (signatures) -> revocation set -> authorizer with our limits
    try:
        token = parse(raw, root)
    except TokenError:
        assert "Err" in expected and "Format" in expected["Err"], f"rejected a valid token: {expected}"
        return
    assert "Format" not in expected.get("Err", {}), "accepted a token with a bad signature or format"
    assert list(token.revocation_ids) == validation["revocation_ids"]
    assert RevocationSet(validation["revocation_ids"][-1:]).revoked(token.revocation_ids) is not None
    builder = authorizer_builder(
        validation["authorizer_code"], Limits(max_time_ms=100), extern_funcs={"test": _test}
    )
    outcome = run_authorizer(builder, token)
    if "Ok" in expected:
        assert outcome.allowed, outcome
        assert outcome.policy == expected["Ok"]
    else:
        assert not outcome.allowed, f"allowed, expected {expected}"
        assert outcome.reason != "limits", outcome
