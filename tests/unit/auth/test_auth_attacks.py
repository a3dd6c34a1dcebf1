"""Every attack the issue lists is denied, through the same verifier the gateway uses."""

from __future__ import annotations

import base64
from datetime import timedelta

import biscuit_auth as ba

from agentlake.auth.approval import ApprovalService
from agentlake.auth.authority import Authority
from agentlake.auth.policy import Attenuation, Grant
from agentlake.auth.tokens import attenuate, encode, mint
from agentlake.auth.verify import RevocationSet, Verifier
from tests.unit.auth.helpers import call, join_fields, now, shop_spec, split_fields


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_the_baseline_token_is_allowed(auth: Authority) -> None:
    token = auth.mint(shop_spec())
    d = auth.verify(token, call())
    assert d.allowed, d
    assert (d.agent, d.user, d.depth) == ("support-bot", "alice", 0)


def test_an_appended_block_cannot_add_a_right(auth: Authority) -> None:
    token = auth.parse(auth.mint(shop_spec(grants=(Grant("shop", "get_order"),))))
    forged = token.append(
        ba.BlockBuilder('right("shop", "refund_order", "write"); right("shop", "*", "write");')
    )
    d = auth.verify(encode(forged), call("refund_order", "write"))
    assert not d.allowed and d.reason == "denied"
    assert "no allow policy matched" in (d.failed_check or "")


def test_a_forged_signature_is_rejected(auth: Authority) -> None:
    raw = bytearray(_raw(auth.mint(shop_spec())))
    fields = split_fields(bytes(raw))
    authority = next(f for f in fields if f[0] == 2)
    inner = split_fields(authority[2])  # SignedBlock: 1 block, 2 next key, 3 signature
    sig_field = next(f for f in inner if f[0] == 3)
    bad_sig = bytes([sig_field[2][0] ^ 0x01]) + sig_field[2][1:]
    inner = [(f, w, bad_sig if f == 3 else v) for f, w, v in inner]
    fields = [(f, w, join_fields(inner) if f == 2 else v) for f, w, v in fields]
    d = auth.verify(_b64(join_fields(fields)), call())
    assert not d.allowed and d.reason == "invalid_token"


def test_a_token_signed_by_another_root_is_rejected(auth: Authority) -> None:
    other = mint(shop_spec(), ba.KeyPair(), auth.keys.current_id())
    d = auth.verify(encode(other), call())
    assert not d.allowed and d.reason == "invalid_token"


def test_a_truncated_token_is_rejected(auth: Authority) -> None:
    raw = _raw(auth.attenuate(auth.mint(shop_spec()), Attenuation(delegate="sub")))
    for cut in (1, 10, 64, len(raw) // 2, len(raw) - 1):
        d = auth.verify(_b64(raw[:cut]), call())
        assert not d.allowed and d.reason == "invalid_token", cut


def test_reordered_or_swapped_blocks_are_rejected(auth: Authority) -> None:
    token = auth.mint(shop_spec())
    a = auth.attenuate(token, Attenuation(delegate="a", tools=(("shop", "get_order"),)))
    ab = auth.attenuate(a, Attenuation(delegate="b", operations=("read",)))
    fields = split_fields(_raw(ab))
    blocks = [f for f in fields if f[0] == 3]
    assert len(blocks) == 2
    others = [f for f in fields if f[0] != 3]
    reordered = [*others[:2], blocks[1], blocks[0], *others[2:]]
    d = auth.verify(_b64(join_fields(reordered)), call())
    assert not d.allowed and d.reason == "invalid_token"
    # swap: block 0's authority slot with an attenuation block
    authority = next(f for f in fields if f[0] == 2)
    swapped = [
        (2, 2, blocks[0][2]) if f[0] == 2 else ((3, 2, authority[2]) if f == blocks[0] else f) for f in fields
    ]
    d = auth.verify(_b64(join_fields(swapped)), call())
    assert not d.allowed and d.reason == "invalid_token"


def test_an_expired_token_is_denied_by_its_own_check(auth: Authority) -> None:
    token = auth.mint(shop_spec(expires=now() - timedelta(seconds=5)))
    d = auth.verify(token, call())
    assert not d.allowed and "check if time($t)" in (d.failed_check or "")


def test_a_child_cannot_outlive_its_parent(auth: Authority) -> None:
    token = auth.mint(shop_spec(expires=now() + timedelta(seconds=30)))
    child = auth.attenuate(token, Attenuation(delegate="sub", expires=now() + timedelta(days=30)))
    later = now() + timedelta(minutes=5)
    d = auth.verify(child, call(time=later))
    assert not d.allowed and d.failed_check is not None and d.failed_check.startswith("block 0")


def test_the_wrong_task_is_denied(auth: Authority) -> None:
    d = auth.verify(auth.mint(shop_spec(task="t-1")), call(task="t-2"))
    assert not d.allowed and 'check if task($k), $k == "t-1"' in (d.failed_check or "")


def test_the_wrong_tool_or_server_is_denied(auth: Authority) -> None:
    token = auth.mint(shop_spec())
    assert not auth.verify(token, call("search_orders")).allowed
    d = auth.verify(token, call(server="billing"))
    assert not d.allowed and 'check if server($s), $s == "shop"' in (d.failed_check or "")
    # a write on a read grant
    assert not auth.verify(token, call("get_order", "write")).allowed


def test_a_token_minted_for_another_server_is_denied(auth: Authority) -> None:
    token = auth.mint(shop_spec(grants=(Grant("billing", "*", "write"),)))
    d = auth.verify(token, call("get_order", "read", server="shop"))
    assert not d.allowed and 'check if server($s), $s == "billing"' in (d.failed_check or "")


def test_a_revoked_ancestor_denies_every_descendant(auth: Authority) -> None:
    root = auth.mint(shop_spec())
    child = auth.attenuate(root, Attenuation(delegate="a"))
    grandchild = auth.attenuate(child, Attenuation(delegate="b"))
    sibling = auth.attenuate(root, Attenuation(delegate="c"))
    assert auth.verify(grandchild, call()).allowed
    auth.revoke(child)
    d = auth.verify(grandchild, call())
    assert not d.allowed and d.reason == "revoked" and "ancestor" in (d.failed_check or "")
    assert auth.verify(sibling, call()).allowed  # revoking a branch leaves its siblings
    auth.revoke(root)
    assert auth.verify(sibling, call()).reason == "revoked"


def test_an_approval_block_moved_to_another_token_is_rejected(auth: Authority) -> None:
    approver = ApprovalService(ba.KeyPair())
    spec = shop_spec(approval_tools=("refund_order",), approver_key=approver.public_key)
    a, b = auth.parse(auth.mint(spec)), auth.parse(auth.mint(spec))
    req = approver.request(a, "shop", "refund_order", "t-1", "customer asked")
    approved = approver.grant(req.request_id, by="manager")
    assert auth.verify(approved, call("refund_order", "write")).allowed
    assert not auth.verify(encode(b), call("refund_order", "write")).allowed
    # graft the approval block onto b: same third-party block bytes, different previous signature
    a_fields, b_fields = split_fields(_raw(approved)), split_fields(_raw(encode(b)))
    approval = [f for f in a_fields if f[0] == 3]
    grafted = [f for f in b_fields if f[0] != 4] + approval + [f for f in a_fields if f[0] == 4]
    d = auth.verify(_b64(join_fields(grafted)), call("refund_order", "write"))
    assert not d.allowed and d.reason == "invalid_token"
    # and the library refuses to append it to b at all
    req2 = approver.request(a, "shop", "refund_order", "t-1", "again")
    block = a.third_party_request().create_block(
        approver.key.private_key, ba.BlockBuilder('approved("t-1", "refund_order");')
    )
    try:
        b.append_third_party(approver.key.public_key, block)
        raised = False
    except Exception:
        raised = True
    assert raised
    approver.deny(req2.request_id, by="manager")


def test_an_approval_for_another_task_or_from_another_key_does_not_count(auth: Authority) -> None:
    approver = ApprovalService(ba.KeyPair())
    rogue = ApprovalService(ba.KeyPair())
    spec = shop_spec(approval_tools=("refund_order",), approver_key=approver.public_key)
    token = auth.parse(auth.mint(spec))
    other_task = approver.grant(approver.request(token, "shop", "refund_order", "t-9", "x").request_id, "m")
    assert not auth.verify(other_task, call("refund_order", "write")).allowed
    forged = rogue.grant(rogue.request(token, "shop", "refund_order", "t-1", "x").request_id, "m")
    assert not auth.verify(forged, call("refund_order", "write")).allowed


def test_an_authorizer_that_forgets_the_clock_or_audience_denies(auth: Authority) -> None:
    """Expiry and audience are checks inside the token: a path without `time` or `server` facts denies."""
    from agentlake.auth.verify import authorizer_builder, run_authorizer

    token = auth.parse(auth.mint(shop_spec()))
    lax = authorizer_builder('tool("get_order"); operation("read"); task("t-1"); depth(0); allow if true;')
    outcome = run_authorizer(lax, token)
    assert not outcome.allowed
    assert "check if time($t)" in (outcome.failed_check or "")


def test_delegation_depth_is_bounded(auth: Authority) -> None:
    token = auth.mint(shop_spec(max_depth=1))
    one = auth.attenuate(token, Attenuation(delegate="a"))
    two = auth.attenuate(one, Attenuation(delegate="b"))
    assert auth.verify(one, call()).allowed
    d = auth.verify(two, call())
    assert not d.allowed and "check if depth($d), $d <= 1" in (d.failed_check or "")


def test_rotated_keys_keep_old_tokens_valid_until_retired(auth: Authority) -> None:
    old = auth.mint(shop_spec())
    old_kid = auth.keys.current_id()
    new_kid = auth.keys.rotate()
    new = auth.mint(shop_spec())
    assert new_kid != old_kid
    assert auth.verify(old, call()).allowed and auth.verify(new, call()).allowed
    auth.keys.retire(old_kid)
    fresh = Authority(auth.keys)
    assert fresh.verify(old, call()).reason == "invalid_token"
    assert fresh.verify(new, call()).allowed


def test_revocation_set_is_shared_by_reference() -> None:
    root = ba.KeyPair()
    revs = RevocationSet()
    v = Verifier(root.public_key, revocations=revs)
    token = mint(shop_spec(), root, 1)
    child = attenuate(token, Attenuation(delegate="x"))
    assert v.authorize(encode(child), call()).allowed
    revs.add(token.revocation_ids[0])
    assert v.authorize(encode(child), call()).reason == "revoked"


def test_a_token_that_explodes_the_datalog_hits_the_deliberate_limits(auth: Authority) -> None:
    """Work is bounded by facts and iterations (not only wall-clock), so a hostile block is cut short."""
    token = auth.parse(auth.mint(shop_spec()))
    facts = "".join(f"a({i});" for i in range(40))
    bomb = token.append(ba.BlockBuilder(facts + "p($x, $y, $z) <- a($x), a($y), a($z);"))  # 64,000 facts
    d = auth.verify(encode(bomb), call())
    assert not d.allowed and d.reason == "limits", d
