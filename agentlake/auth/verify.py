"""The verifier: one decision per tool call, the same path for every entry point.

Order: parse and check signatures (root key chosen by the token's key id) →
revocation set (any block's revocation id revoked denies: revoking a token
revokes everything attenuated from it) → authorizer with the request facts, a
trusted clock, the delegation depth and the task's call count → policies.

The authorizer's Datalog limits are set deliberately. The library's default
time limit (1 ms) is wall-clock: on a loaded machine a preempted thread hits it
and valid tokens are denied (measured here: at a load average of 30 on 2 cores
even 25 ms was exceeded). Our tokens need a few dozen facts and a handful of
iterations, so the *work* is bounded by small fact and iteration limits (what
stops a hostile token), and the time limit is only a backstop, set high
(`DEFAULT_LIMITS`: 200 ms, ``AGENTLAKE_AUTH_MAX_TIME_MS``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import biscuit_auth as ba

from agentlake.auth.policy import AUTHORIZER_POLICIES, Request, request_code
from agentlake.auth.tokens import KeyProvider, TokenError, parse


@dataclass(frozen=True)
class Limits:
    """Authorizer limits per decision."""

    max_time_ms: float = 200.0
    max_facts: int = 1000
    max_iterations: int = 100


DEFAULT_LIMITS = Limits()

_CHECK_RE = re.compile(r"Check n°(\d+) in (block n°(\d+)|authorizer): (.*?)(?=, Check n°\d+ in |$)", re.S)


@dataclass(frozen=True)
class Decision:
    """The outcome of one authorization.

    Attributes:
        allowed: whether the call may proceed.
        reason: ``allowed``, ``denied`` (a check or policy failed), ``revoked``,
            ``invalid_token``, ``no_token`` or ``limits`` (Datalog limits reached).
        failed_check: the first failed check as ``block N, check M: <Datalog>``;
            never the token's other facts.
        revocation_ids: the token's block revocation ids, root first (empty without a token).
        agent, user: from the authority block (None when the token did not parse).
        depth: delegation hops.
        latency_us: time to decide.
    """

    allowed: bool
    reason: str
    failed_check: str | None = None
    revocation_ids: tuple[str, ...] = ()
    agent: str | None = None
    user: str | None = None
    depth: int = 0
    latency_us: int = 0

    @property
    def token_id(self) -> str | None:
        return self.revocation_ids[0] if self.revocation_ids else None

    @property
    def message(self) -> str:
        """One line for the caller: the reason and the failed check, nothing else."""
        if self.allowed:
            return "allowed"
        return f"{self.reason}: {self.failed_check}" if self.failed_check else self.reason


class RevocationSet:
    """Revoked block revocation ids (thread-safe; fed by the revocation follower)."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: set[str] = set(ids)
        self._lock = threading.Lock()
        self.changed = threading.Event()

    def add(self, revocation_id: str) -> None:
        with self._lock:
            self._ids.add(revocation_id.lower())
        self.changed.set()

    def revoked(self, ids: Iterable[str]) -> str | None:
        """The first of `ids` that is revoked, or None."""
        for i in ids:
            if i in self._ids:
                return i
        return None

    def __contains__(self, revocation_id: object) -> bool:
        return revocation_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


class TaskBudgets:
    """Tool calls counted per task, once per call id (a re-delivered event counts once).

    Fed with the gateway's own allowed calls and, when following the log, with
    other gateways' `AuthDecision` events.
    """

    def __init__(self) -> None:
        self._calls: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def record(self, task: str, call_id: str) -> None:
        with self._lock:
            self._calls.setdefault(task, set()).add(call_id)

    def count(self, task: str) -> int:
        return len(self._calls.get(task, ()))


def _failed_check(text: str) -> str | None:
    m = _CHECK_RE.search(text)
    if m is None:
        return None
    where = f"block {m.group(3)}" if m.group(3) is not None else "authorizer"
    return f"{where}, check {m.group(1)}: {m.group(4).strip()}"


def explain(error: str) -> tuple[str, str | None]:
    """(reason, failed check) from a biscuit-python authorization error string."""
    if "execution limits" in error.lower() or "timeout" in error.lower():
        return "limits", "Datalog execution limits reached"
    check = _failed_check(error)
    if check is not None:
        return "denied", check
    if "no matching policy" in error:
        return (
            "denied",
            "no allow policy matched: the token grants no right for this server, tool and operation",
        )
    m = re.search(r"deny policy.*?index: (\d+)", error)
    if m:
        return "denied", f"deny policy {m.group(1)} matched"
    return "denied", error.splitlines()[0][:300] if error else None


class Verifier:
    """Verifies tokens against requests.

    Args:
        root: the authority public key, or a provider ``key_id -> PublicKey``
            (`KeyRing.public_key`), so rotated keys still verify.
        revocations: the live revocation set.
        budgets: per-task call counts.
        limits: the authorizer's Datalog limits.
        extra_code: authorizer Datalog added to every decision (policies, checks).
    """

    def __init__(
        self,
        root: ba.PublicKey | KeyProvider,
        *,
        revocations: RevocationSet | None = None,
        budgets: TaskBudgets | None = None,
        limits: Limits = DEFAULT_LIMITS,
        extra_code: str = "",
    ) -> None:
        self.root = root
        self.revocations = revocations if revocations is not None else RevocationSet()
        self.budgets = budgets if budgets is not None else TaskBudgets()
        self.limits = limits
        self._base = authorizer_builder(extra_code + "\n" + AUTHORIZER_POLICIES, limits)
        self._snapshot = self._base.raw_snapshot()
        # agent and user of an authority block, by its revocation id (signature-bound, so immutable)
        self._principals: dict[str, tuple[str | None, str | None]] = {}

    def parse(self, token: str | bytes) -> ba.Biscuit:
        """Parse and verify signatures. Raises `TokenError`."""
        return parse(token, self.root)

    def authorize(self, token: str | bytes | ba.Biscuit | None, req: Request) -> Decision:
        """Decide one request. Never raises for a bad token: the decision says why."""
        t0 = time.perf_counter_ns()
        if token is None or token == "" or token == b"":
            return Decision(False, "no_token", "a Biscuit token is required", latency_us=_since(t0))
        try:
            biscuit = token if isinstance(token, ba.Biscuit) else self.parse(token)
            ids = tuple(biscuit.revocation_ids)
            n_blocks = biscuit.block_count()
            depth = sum(1 for i in range(1, n_blocks) if biscuit.block_external_key(i) is None)
        except TokenError as e:
            return Decision(False, "invalid_token", str(e), latency_us=_since(t0))
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            return Decision(False, "invalid_token", "unreadable token", latency_us=_since(t0))
        revoked = self.revocations.revoked(ids)
        if revoked is not None:
            which = "the token" if revoked == ids[-1] else f"an ancestor (block {ids.index(revoked)})"
            return Decision(
                False,
                "revoked",
                f"{which} is revoked ({revoked[:16]}…)",
                ids,
                depth=depth,
                latency_us=_since(t0),
            )
        code, params = request_code(req, depth, self.budgets.count(req.task))
        try:
            builder = ba.AuthorizerBuilder.from_raw_snapshot(self._snapshot)
            builder.add_code(code, params)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            return Decision(
                False, "denied", "the request cannot be expressed", ids, depth=depth, latency_us=_since(t0)
            )
        cached = self._principals.get(ids[0])
        outcome = run_authorizer(builder, biscuit, principals=cached is None)
        if cached is None:
            cached = (outcome.agent, outcome.user)
            if len(self._principals) >= 4096:
                self._principals.clear()
            self._principals[ids[0]] = cached
        outcome = Outcome(outcome.allowed, outcome.policy, outcome.reason, outcome.failed_check, *cached)
        allowed, reason, check, agent, user = (
            outcome.allowed,
            outcome.reason,
            outcome.failed_check,
            outcome.agent,
            outcome.user,
        )
        return Decision(allowed, reason, check, ids, agent, user, depth, _since(t0))


def authorizer_builder(
    code: str,
    limits: Limits = DEFAULT_LIMITS,
    params: dict[str, Any] | None = None,
    extern_funcs: dict[str, Callable[..., Any]] | None = None,
) -> ba.AuthorizerBuilder:
    """An authorizer builder for `code` with the deliberate `limits` (every verification uses this).

    `extern_funcs` are Datalog v6 foreign functions (``$x.extern::name($y)``), none by default.

    Raises:
        ValueError: `code` is not valid Datalog.
    """
    try:
        builder = ba.AuthorizerBuilder(code, params)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise ValueError(f"invalid authorizer Datalog: {str(e).splitlines()[0][:300]}") from None
    anyb: Any = builder  # the stubs lack limits() / set_limits()
    lim = anyb.limits()
    lim.max_time = timedelta(microseconds=int(limits.max_time_ms * 1000))
    lim.max_facts = limits.max_facts
    lim.max_iterations = limits.max_iterations
    anyb.set_limits(lim)
    for name, fn in (extern_funcs or {}).items():
        anyb.register_extern_func(name, fn)
    return builder


@dataclass(frozen=True)
class Outcome:
    """What running an authorizer gave: allowed with the matching policy index, or why not."""

    allowed: bool
    policy: int | None
    reason: str
    failed_check: str | None
    agent: str | None = None
    user: str | None = None


def run_authorizer(builder: ba.AuthorizerBuilder, token: ba.Biscuit, principals: bool = True) -> Outcome:
    """Build the authorizer for `token` and run it; every library error becomes a denial.

    `principals`: also read ``agent`` and ``user`` from the authority block (one Datalog query).
    """
    try:
        authorizer = builder.build(token)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        reason, check = explain(str(e))
        return Outcome(False, None, reason, check)
    try:
        policy = authorizer.authorize()
        agent, user = _principals(authorizer) if principals else (None, None)
        return Outcome(True, int(policy), "allowed", None, agent, user)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        reason, check = explain(str(e))
        agent, user = _principals(authorizer) if principals else (None, None)
        return Outcome(False, None, reason, check, agent, user)


_PRINCIPALS = ba.Rule("principals($a, $u) <- agent($a), user($u)")


def _principals(authorizer: ba.Authorizer) -> tuple[str | None, str | None]:
    try:
        rows = authorizer.query(_PRINCIPALS)
        if not rows:
            return None, None
        a, u = rows[0].terms
        return (a if isinstance(a, str) else None), (u if isinstance(u, str) else None)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        return None, None


_RIGHTS = ba.Rule("granted($s, $t, $o) <- right($s, $t, $o)")


def granted_rights(token: ba.Biscuit, limits: Limits = DEFAULT_LIMITS) -> set[tuple[str, str, str]]:
    """The ``right(server, tool, operation)`` facts of the token's authority block.

    Later blocks can only narrow these (their facts are not trusted by the policies).

    Raises:
        TokenError: the rights cannot be read (Datalog limits, library error).
    """
    try:
        authorizer = authorizer_builder("allow if true;", limits).build(token)
        rows = authorizer.query(_RIGHTS)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise TokenError(f"cannot read the token's grants: {str(e).splitlines()[0][:300]}") from None
    return {tuple(str(x) for x in r.terms) for r in rows}  # type: ignore[misc]


def _since(t0: int) -> int:
    return (time.perf_counter_ns() - t0) // 1000


__all__ = [
    "DEFAULT_LIMITS",
    "Decision",
    "Limits",
    "RevocationSet",
    "TaskBudgets",
    "Verifier",
    "explain",
    "granted_rights",
]
