"""Checks a server command makes before it starts: the address is loopback (or remote
binding was asked for), and the port can be bound. Each failure is one `UserError` line.

The servers behind `lake serve` and `auth gateway serve` have no authentication of
their own (the gateway checks Biscuit tokens per call, but its metadata and the lake's
whole API are open), so they listen on loopback unless ``--allow-remote`` is given —
the same rule as `dashboard`.
"""

from __future__ import annotations

import errno
import socket

from agentlake._net import is_loopback
from agentlake.cli._app import UserError

__all__ = ["bind_error", "check_bind", "is_loopback"]


def check_bind(host: str, port: int, *, what: str, allow_remote: bool) -> None:
    """Refuse a bind before the server starts.

    Args:
        host: the bind address.
        port: the TCP port (0: any free port; only the address is checked).
        what: the server, for the message (``the lake``).
        allow_remote: the user passed ``--allow-remote``.

    Raises:
        UserError: a non-loopback address without `allow_remote`; a port in use; an
            address that is not this machine's; a port that needs privileges.
    """
    if not is_loopback(host) and not allow_remote:
        raise UserError(
            f"refusing to bind {host}: {what} has no authentication, so it listens on 127.0.0.1 "
            "unless --allow-remote is given (then put it behind a firewall or an authenticating proxy)"
        )
    bare = host.strip("[]")
    try:
        infos = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as e:
        raise UserError(
            f"cannot bind {host}: {getattr(e, 'strerror', None) or e}; pass an address of this machine"
        ) from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(addr)
        except OSError as e:
            raise UserError(bind_error(host, port, e)) from None


def bind_error(host: str, port: int, e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use: stop what listens there, or pick another port with --port"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"cannot bind {host}: it is not an address of this machine (use 127.0.0.1)"
    if e.errno == errno.EACCES:
        return f"cannot bind port {port}: ports below 1024 need privileges; pick another with --port"
    return f"cannot bind {host}:{port}: {e.strerror or e}"
