"""Minting, attenuating, parsing and describing Biscuit tokens.

Tokens travel as URL-safe base64 (what `Biscuit.to_base64` gives). Parsing
never lets a library error escape as anything but `TokenError`: biscuit-python
raises `pyo3_runtime.PanicException` (a `BaseException`) on some malformed
input, which is caught here too.

A token's id is its authority block's revocation id; a block is named by its
own revocation id. Token bytes are malleable, so audits and replay caches key
on revocation ids, never on a hash of the bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import biscuit_auth as ba

from agentlake.auth.policy import Attenuation, TokenSpec, attenuation_block, authority_block

MAX_TOKEN_CHARS = 64 * 1024


class TokenError(ValueError):
    """A token that cannot be parsed or verified (bad base64, bad signature, unknown key id)."""


def _guard(e: BaseException) -> None:
    if isinstance(e, KeyboardInterrupt | SystemExit | GeneratorExit):
        raise e


def mint(spec: TokenSpec, root: ba.KeyPair, root_key_id: int) -> ba.Biscuit:
    """A new token: one authority block from `spec`, signed by `root`, carrying `root_key_id`."""
    code, params, scope = authority_block(spec)
    scope_keys = {k: ba.PublicKey(v) for k, v in scope.items()}
    try:
        builder = ba.BiscuitBuilder(code, params, scope_keys or None)
        builder.set_root_key_id(root_key_id)
        return builder.build(root.private_key)
    except BaseException as e:
        _guard(e)
        raise TokenError(f"cannot build the token: {e}") from None


def attenuate(token: ba.Biscuit, att: Attenuation) -> ba.Biscuit:
    """`token` with one more block narrowing it (offline: no key needed)."""
    code, params = attenuation_block(att)
    try:
        return token.append(ba.BlockBuilder(code, params))
    except BaseException as e:
        _guard(e)
        raise TokenError(f"cannot attenuate the token: {e}") from None


KeyProvider = Callable[[int | None], ba.PublicKey]


def parse(data: str | bytes, root: ba.PublicKey | KeyProvider) -> ba.Biscuit:
    """Verify signatures and parse. `data` is base64 (str) or raw bytes.

    Raises:
        TokenError: anything wrong with the token, including library panics.
    """
    if isinstance(data, str):
        data = data.strip()
        if data.lower().startswith("bearer "):
            data = data[7:].strip()
    if not data:
        raise TokenError("empty token")
    if len(data) > MAX_TOKEN_CHARS:
        raise TokenError(f"token longer than {MAX_TOKEN_CHARS} characters")
    try:
        if isinstance(data, str):
            return ba.Biscuit.from_base64(data, root)
        return ba.Biscuit.from_bytes(bytes(data), root)
    except BaseException as e:
        _guard(e)
        raise TokenError(f"invalid token: {_one_line(e)}") from None


def parse_unverified(data: str) -> ba.UnverifiedBiscuit:
    """Parse without checking signatures (for `token inspect` of a foreign token)."""
    try:
        return ba.UnverifiedBiscuit.from_base64(data.strip())
    except BaseException as e:
        _guard(e)
        raise TokenError(f"invalid token: {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


@dataclass(frozen=True)
class BlockInfo:
    index: int
    revocation_id: str
    source: str
    external_key: str | None  # third-party (approval) blocks: the signer's public key


@dataclass(frozen=True)
class TokenInfo:
    """What `token inspect` shows: blocks with their Datalog and revocation ids."""

    root_key_id: int | None
    blocks: tuple[BlockInfo, ...]
    verified: bool

    @property
    def token_id(self) -> str:
        return self.blocks[0].revocation_id

    @property
    def depth(self) -> int:
        return delegation_depth_of(self.blocks)

    def to_json(self) -> dict[str, object]:
        return {
            "token_id": self.token_id,
            "root_key_id": self.root_key_id,
            "verified": self.verified,
            "depth": self.depth,
            "blocks": [
                {
                    "index": b.index,
                    "revocation_id": b.revocation_id,
                    "third_party_key": b.external_key,
                    "datalog": b.source,
                }
                for b in self.blocks
            ],
        }


def delegation_depth_of(blocks: tuple[BlockInfo, ...] | list[BlockInfo]) -> int:
    """Delegation hops: first-party blocks after the authority block (approvals don't count)."""
    return sum(1 for b in blocks[1:] if b.external_key is None)


def describe(token: ba.Biscuit | ba.UnverifiedBiscuit, root_key_id: int | None = None) -> TokenInfo:
    """Blocks, Datalog and revocation ids of a parsed token."""
    try:
        ids = list(token.revocation_ids)
        blocks = []
        for i in range(token.block_count()):
            ext = token.block_external_key(i) if isinstance(token, ba.Biscuit) else None
            blocks.append(BlockInfo(i, ids[i], token.block_source(i), ext))
        kid = root_key_id
        if isinstance(token, ba.UnverifiedBiscuit):
            kid = token.root_key_id()
        return TokenInfo(kid, tuple(blocks), isinstance(token, ba.Biscuit))
    except BaseException as e:
        _guard(e)
        raise TokenError(f"cannot describe the token: {_one_line(e)}") from None


def root_key_id_of(data: str) -> int | None:
    """The key id a base64 token claims (unverified), to pick the root key."""
    return parse_unverified(data).root_key_id()


def encode(token: ba.Biscuit) -> str:
    return str(token.to_base64())
