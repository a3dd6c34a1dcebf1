"""`pip install agentlake`: the wheel carries the Avro schemas, py.typed, the dashboard's
assets and the extras (built with `pip wheel --no-deps` from a copy of the source)."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contents_and_extras(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "agentlake", src / "agentlake", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # the build backend comes from the package index (setuptools>=77, build isolation)
    require(r.returncode == 0 or "Could not find a version" not in r.stderr, "no package index reachable")
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("agentlake-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    schemas = {p.name for p in (ROOT / "agentlake" / "schemas" / "avro").glob("*.avsc")}
    assert {f"agentlake/schemas/avro/{s}" for s in schemas} <= names
    assert "agentlake/py.typed" in names
    assert {"agentlake/dashboard/static/dashboard.js", "agentlake/dashboard/static/dashboard.css"} <= names
    assert "agentlake/otel/__init__.py" in names and "agentlake/examples/suite.yaml" in names
    assert not any(n.startswith("tests/") for n in names)
    meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
    meta = email.message_from_bytes(zipfile.ZipFile(wheel).read(meta_name))
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"streams", "projections", "lake", "auth", "otel", "dashboard", "server", "dev"} <= extras
    requires = meta.get_all("Requires-Dist") or []
    assert any(r.startswith("opentelemetry-proto") and 'extra == "otel"' in r for r in requires)
    assert any(r.startswith("plotly") and 'extra == "dashboard"' in r for r in requires)
    entry = zipfile.ZipFile(wheel).read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    assert "agentlake = agentlake.cli:main" in entry
