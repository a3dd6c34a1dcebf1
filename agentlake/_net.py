"""Free loopback ports for the brokers and servers that tests and benchmarks start."""

from __future__ import annotations

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
