"""Loopback helpers: free ports for the brokers and servers that tests and benchmarks start,
and the loopback check every server command makes before it binds."""

from __future__ import annotations

import ipaddress
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 free at call time (the OS picks it; another process may take it
    before the caller binds)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port p on 127.0.0.1 with p and p+1 free at call time (a Kafka broker's and controller's
    listeners).

    Raises:
        RuntimeError: no such pair found in 50 tries.
    """
    for _ in range(50):
        port = free_port()
        if port > 65000:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``, ``[::1]``); names
    other than ``localhost`` are not resolved and count as remote."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
