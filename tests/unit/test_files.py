"""User files: one reader for every loader, output paths checked before the work."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentlake._files import UserFileError, check_writable, read_user_text
from agentlake.registry import load_registry_file
from agentlake.sim.openapi import load_openapi
from agentlake.sim.staging import load_staging_spec
from agentlake.sim.suite import load_suite

BINARY = b"\xd2W D\x98\x8a|?\xfa"


@pytest.mark.parametrize("loader", [load_registry_file, load_suite, load_staging_spec, load_openapi])
def test_every_loader_says_the_same_of_a_binary_file(tmp_path: Path, loader: Callable[[Any], Any]) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(BINARY)
    with pytest.raises(Exception) as e:  # each loader's own error type
        loader(path)
    assert str(e.value).endswith("binary.yaml: not UTF-8 text: invalid continuation byte at byte 0")
    assert "\n" not in str(e.value)


def test_read_user_text(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text("id: é\n", encoding="utf-8")
    assert read_user_text(tmp_path / "ok.yaml") == "id: é\n"
    with pytest.raises(UserFileError, match=r"nope\.yaml: cannot read the file: No such file or directory$"):
        read_user_text(tmp_path / "nope.yaml")
    with pytest.raises(UserFileError, match=r"cannot read the file: Is a directory$"):
        read_user_text(tmp_path)


def test_check_writable_changes_nothing_and_names_the_option(tmp_path: Path) -> None:
    new = tmp_path / "j.xml"
    check_writable(new, "--junit")
    assert not new.exists()  # probed, then removed
    old = tmp_path / "old.md"
    old.write_text("keep", encoding="utf-8")
    check_writable(old, "--markdown")
    assert old.read_text(encoding="utf-8") == "keep"
    with pytest.raises(
        UserFileError, match=r"cannot write the --junit report: directory '.*/no/such' does not exist$"
    ):
        check_writable(tmp_path / "no" / "such" / "j.xml", "--junit")
    with pytest.raises(UserFileError, match=r"cannot write the --markdown report: is a directory$"):
        check_writable(tmp_path, "--markdown")
    with pytest.raises(UserFileError, match=r"^/proc/nope\.md: cannot write the --markdown report: "):
        check_writable("/proc/nope.md", "--markdown")
