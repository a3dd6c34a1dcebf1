"""Human approval as a third-party block, through an in-process approval service.

biscuit-python 0.4 cannot serialize a `ThirdPartyRequest`, so the approving
party runs in the same process as the token holder: the service keeps the
token object while the request is pending. The lifecycle is on the log as
`AuthApproval` events (requested → granted | denied | expired), so a long-lived
session can wait for an approval (`wait`) and resume with the approved token.
A ``granted`` event's ``expires_us`` is the approval block's expiry (the other
states carry the request's deadline), so the delegation graph knows how long
the approved token may call the tool.

The approval block says ``approved(task, tool)`` and carries its own expiry
check; it is signed over the requesting token's last signature, so it cannot
be moved to another token.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import biscuit_auth as ba

from agentlake.auth.events import APPROVAL, AuthEvents
from agentlake.auth.policy import approval_block
from agentlake.auth.tokens import TokenError, encode
from agentlake.schemas import new_id
from agentlake.topics import AUTH_DELEGATIONS


class ApprovalError(ValueError):
    """Unknown request, or a request that is no longer pending."""


@dataclass
class ApprovalRequest:
    request_id: str
    token: ba.Biscuit
    server: str
    tool: str
    task: str | None
    reason: str
    expires: datetime
    state: str = "requested"  # requested | granted | denied | expired
    approved_token: str | None = None
    decided_by: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class ApprovalService:
    """Grants approvals by signing third-party blocks with its own key.

    Args:
        key: the approver's key pair (its public key is named in tokens' approval checks).
        events: where the lifecycle events go.
        approval_ttl: how long a granted approval block stays valid.
    """

    def __init__(
        self,
        key: ba.KeyPair,
        events: AuthEvents | None = None,
        approval_ttl: timedelta = timedelta(minutes=15),
    ) -> None:
        self.key = key
        self.events = events or AuthEvents()
        self.approval_ttl = approval_ttl
        self._requests: dict[str, ApprovalRequest] = {}
        self._lock = threading.Lock()

    @property
    def public_key(self) -> str:
        return str(self.key.public_key)

    def request(
        self,
        token: ba.Biscuit,
        server: str,
        tool: str,
        task: str | None,
        reason: str,
        timeout: timedelta = timedelta(minutes=10),
    ) -> ApprovalRequest:
        """Ask a human to approve `tool` for `task` with `token`. Emits ``requested``."""
        req = ApprovalRequest(new_id(), token, server, tool, task, reason, datetime.now(UTC) + timeout)
        with self._lock:
            self._requests[req.request_id] = req
        self._emit(req)
        return req

    def pending(self) -> list[ApprovalRequest]:
        self.expire_due()
        return [r for r in self._requests.values() if r.state == "requested"]

    def get(self, request_id: str) -> ApprovalRequest:
        req = self._requests.get(request_id)
        if req is None:
            raise ApprovalError(f"no approval request {request_id!r}")
        return req

    def grant(self, request_id: str, by: str) -> str:
        """Approve: append the signed approval block. Returns the approved token (base64)."""
        req = self._decide(request_id)
        until = datetime.now(UTC) + self.approval_ttl
        code, params = approval_block(req.task, req.tool, until)
        try:
            block = req.token.third_party_request().create_block(
                self.key.private_key, ba.BlockBuilder(code, params)
            )
            approved = req.token.append_third_party(self.key.public_key, block)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            raise TokenError(f"cannot sign the approval: {e}") from None
        req.state, req.decided_by, req.approved_token = "granted", by, encode(approved)
        self._emit(req, approval_revocation_id=approved.revocation_ids[-1], expires=until)
        req.done.set()
        return req.approved_token

    def deny(self, request_id: str, by: str) -> None:
        req = self._decide(request_id)
        req.state, req.decided_by = "denied", by
        self._emit(req)
        req.done.set()

    def expire_due(self, now: datetime | None = None) -> int:
        """Expire pending requests past their deadline. Returns how many."""
        now = now or datetime.now(UTC)
        n = 0
        for req in list(self._requests.values()):
            if req.state == "requested" and now >= req.expires:
                req.state = "expired"
                self._emit(req)
                req.done.set()
                n += 1
        return n

    async def wait(self, request_id: str, poll_s: float = 0.05) -> ApprovalRequest:
        """Wait until the request is granted, denied or expired (expiry is checked while waiting)."""
        req = self.get(request_id)
        while not req.done.is_set():
            self.expire_due()
            if req.done.is_set():
                break
            await asyncio.sleep(poll_s)
        return req

    def _decide(self, request_id: str) -> ApprovalRequest:
        self.expire_due()
        req = self.get(request_id)
        if req.state != "requested":
            raise ApprovalError(f"approval request {request_id} is already {req.state}")
        return req

    def _emit(
        self,
        req: ApprovalRequest,
        approval_revocation_id: str | None = None,
        expires: datetime | None = None,
    ) -> None:
        """One lifecycle event. ``expires_us`` is the request's deadline, except on ``granted``:
        the approval block's own expiry (`expires`), which bounds the approved token."""
        ids = req.token.revocation_ids
        self.events.emit(
            AUTH_DELEGATIONS,
            ids[-1],
            APPROVAL,
            {
                "request_id": req.request_id,
                "state": req.state,
                "token_revocation_id": ids[-1],
                "token_id": ids[0],
                "task_id": req.task,
                "server_id": req.server,
                "tool": req.tool,
                "reason": req.reason,
                "decided_by": req.decided_by,
                "approval_revocation_id": approval_revocation_id,
                "expires_us": int((expires or req.expires).timestamp() * 1e6),
            },
        )
