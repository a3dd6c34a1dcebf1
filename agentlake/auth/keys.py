"""Identities: Ed25519 keys with key ids, kept in 0600 files or taken from the environment.

Layout under ``$AGENTLAKE_HOME/auth/keys`` (or ``AGENTLAKE_AUTH_KEYS_DIR``)::

    authority-<kid>.key     hex private key of the token authority, key id <kid>
    authority.current       the key id new tokens are signed with
    agent-<id>.key          hex private key of an agent identity
    approver.key            the approval service's key

Tokens carry the authority key id (`root_key_id`), so rotating (a new key id
becomes current) keeps older tokens verifiable until their key is retired
(deleted). ``AGENTLAKE_AUTH_ROOT_KEY=<kid>:<hex private key>`` supplies the
authority key from the environment instead of a file (nothing is written).
Public keys are published as `AuthKeyPublished` events (`key_records`).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import biscuit_auth as ba

from agentlake.settings import Settings

ENV_ROOT_KEY = "AGENTLAKE_AUTH_ROOT_KEY"
_KID_RE = re.compile(r"^authority-(\d+)\.key$")


class KeyStoreError(LookupError):
    """No key for a key id, or a key file that cannot be used (wrong mode, bad hex)."""


@dataclass(frozen=True)
class PublishedKey:
    """A public key as the registry publishes it."""

    key_id: int
    owner: str
    kind: str  # authority | agent | approver
    public_key: str  # hex
    created_us: int
    retired_us: int | None = None


def _read_private(path: Path) -> ba.KeyPair:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyStoreError(f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    try:
        return ba.KeyPair.from_private_key(private_key(path.read_text()))
    except BaseException as e:  # the library panics on some malformed input
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise KeyStoreError(f"{path} does not hold an Ed25519 private key") from None


def _write_private(path: Path, kp: ba.KeyPair) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(str(kp.private_key) + "\n")


def public_hex(key: ba.PublicKey) -> str:
    """``ed25519/<hex>``: the form Biscuit Datalog and `PublicKey(...)` use."""
    return str(key)


def private_key(text: str) -> ba.PrivateKey:
    """A private key from ``ed25519-private/<hex>`` or bare hex (Ed25519)."""
    text = text.strip()
    if "/" not in text:
        text = "ed25519-private/" + text
    return ba.PrivateKey(text)


class KeyRing:
    """Authority keys by key id, agent identities and the approver key.

    Args:
        folder: where key files live (created 0700 on first write).
        root_key: ``<key id>:<private key>`` (`Settings.auth_root_key`, from
            ``AGENTLAKE_AUTH_ROOT_KEY``): the authority key, kept in memory only.
    """

    def __init__(self, folder: Path, root_key: str | None = None) -> None:
        self.folder = folder
        self._authority: dict[int, ba.KeyPair] = {}
        self._env_kid: int | None = None
        value = root_key
        if value:
            kid, _, hexkey = value.partition(":")
            try:
                self._env_kid = int(kid)
                self._authority[self._env_kid] = ba.KeyPair.from_private_key(private_key(hexkey))
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt | SystemExit):
                    raise
                raise KeyStoreError(f"{ENV_ROOT_KEY} must be <key id>:<hex Ed25519 private key>") from None

    # -- authority ---------------------------------------------------------------
    def authority_ids(self) -> list[int]:
        """Key ids that can verify tokens (files and environment), ascending."""
        ids = set(self._authority)
        if self.folder.exists():
            ids |= {int(m.group(1)) for p in self.folder.iterdir() if (m := _KID_RE.match(p.name))}
        return sorted(ids)

    def current_id(self) -> int:
        """The key id new tokens are signed with; creates key 1 on first use (without env)."""
        if self._env_kid is not None:
            return self._env_kid
        marker = self.folder / "authority.current"
        if marker.exists():
            return int(marker.read_text().strip())
        return self.rotate()

    def authority(self, kid: int | None = None) -> ba.KeyPair:
        """The authority key pair `kid` (default: current). Raises `KeyStoreError` when unknown."""
        kid = self.current_id() if kid is None else kid
        kp = self._authority.get(kid)
        if kp is None:
            path = self.folder / f"authority-{kid}.key"
            if not path.exists():
                raise KeyStoreError(f"no authority key with id {kid}")
            kp = self._authority[kid] = _read_private(path)
        return kp

    def rotate(self) -> int:
        """Create a new authority key (next id) and make it current. Returns its key id."""
        if self._env_kid is not None:
            raise KeyStoreError(f"the authority key comes from {ENV_ROOT_KEY}; rotate it there")
        kid = max(self.authority_ids(), default=0) + 1
        kp = ba.KeyPair()
        _write_private(self.folder / f"authority-{kid}.key", kp)
        self._authority[kid] = kp
        tmp = self.folder / "authority.current.tmp"
        tmp.write_text(f"{kid}\n")
        tmp.replace(self.folder / "authority.current")
        return kid

    def retire(self, kid: int) -> None:
        """Delete authority key `kid`: tokens signed with it stop verifying."""
        if kid == self.current_id():
            raise KeyStoreError(f"key {kid} is current; rotate first")
        self._authority.pop(kid, None)
        (self.folder / f"authority-{kid}.key").unlink(missing_ok=True)

    def public_key(self, kid: int | None) -> ba.PublicKey:
        """The root public key for a token's key id (None: the current key), for `Biscuit.from_bytes`."""
        return self.authority(self.current_id() if kid is None else kid).public_key

    # -- identities --------------------------------------------------------------
    def identity(self, owner: str, kind: str = "agent") -> ba.KeyPair:
        """The Ed25519 identity of an agent (or the approver), created 0600 on first use."""
        if not re.match(r"^[A-Za-z0-9_.@-]{1,100}$", owner):
            raise KeyStoreError(f"bad identity name {owner!r}")
        path = self.folder / (f"{kind}.key" if kind == "approver" else f"{kind}-{owner}.key")
        if path.exists():
            return _read_private(path)
        kp = ba.KeyPair()
        try:
            _write_private(path, kp)
        except FileExistsError:  # another process made it first
            return _read_private(path)
        return kp

    def approver(self) -> ba.KeyPair:
        return self.identity("approver", kind="approver")

    def published(self, now_us: int) -> list[PublishedKey]:
        """Every key as a registry record: authority keys by key id, then approver and agent identities."""
        out = [
            PublishedKey(kid, "authority", "authority", public_hex(self.authority(kid).public_key), now_us)
            for kid in self.authority_ids()
        ]
        if self.folder.exists():
            for path in sorted(self.folder.glob("*.key")):
                name = path.name.removesuffix(".key")
                if name == "approver":
                    out.append(
                        PublishedKey(
                            0, "approver", "approver", public_hex(self.approver().public_key), now_us
                        )
                    )
                elif name.startswith("agent-"):
                    owner = name.removeprefix("agent-")
                    out.append(
                        PublishedKey(0, owner, "agent", public_hex(self.identity(owner).public_key), now_us)
                    )
        return out


def keyring_for(settings: Settings) -> KeyRing:
    """The key ring the settings describe (folder, or the key from the environment)."""
    root = settings.auth_root_key.get_secret_value() if settings.auth_root_key else None
    return KeyRing(settings.auth_keys_path, root)
