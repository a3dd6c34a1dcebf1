"""One way to read a user's file and to check an output path before work starts.

Every loader of user-written files (registry, suites, staging specs, OpenAPI
documents) reads through `read_user_text`, so a missing, unreadable or binary
file fails the same way everywhere: a `UserFileError` whose message is one line
that names the file. Each loader re-raises it as its own error type.
"""

from __future__ import annotations

import os
from pathlib import Path


class UserFileError(ValueError):
    """A user's file cannot be read or written. ``str(e)`` is one line: ``<path>: <reason>``.

    Attributes:
        path: the file as given.
        reason: what is wrong, without the path.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_user_text(path: str | os.PathLike[str]) -> str:
    """The text of a user's file, decoded as UTF-8 (a leading BOM is kept as U+FEFF).

    Raises:
        UserFileError: no such file, a directory, not readable, or not UTF-8 (with the
            offset of the first bad byte).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:  # missing, a directory, no permission
        raise UserFileError(path, f"cannot read the file: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserFileError(path, f"not UTF-8 text: {e.reason} at byte {e.start}") from None


def check_writable(path: str | os.PathLike[str], option: str) -> None:
    """Check that a report can be written to `path` later, without changing anything.

    An existing file is opened for appending (its content is untouched); otherwise the
    file is created and removed again, which is the only test that holds for read-only
    mounts, ``/proc`` and ACLs alike.

    Args:
        path: where the report will be written.
        option: the option that named it (``--junit``), for the message.

    Raises:
        UserFileError: ``<path>: cannot write the <option> report: <reason>``.
    """
    p = Path(path)
    what = f"cannot write the {option} report"
    if p.is_dir():
        raise UserFileError(path, f"{what}: is a directory")
    if not p.parent.is_dir():
        raise UserFileError(path, f"{what}: directory {str(p.parent)!r} does not exist")
    existed = p.exists()
    try:
        with open(p, "a" if existed else "x", encoding="utf-8"):
            pass
    except OSError as e:
        raise UserFileError(path, f"{what}: {e.strerror or e}") from None
    if not existed:
        p.unlink(missing_ok=True)
