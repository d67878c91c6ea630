"""Free loopback ports for the test servers: one place for every Python suite
(this package's, the sidecar's own in tests/python and deploy/tests)."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768-60999),
    never the same twice in this process: a port from bind(0) can be given
    to an outgoing connection before the server under test binds it."""
    global _NEXT_PORT
    for _ in range(12000):
        _NEXT_PORT = 20000 + (_NEXT_PORT - 20000 + 1) % 12000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", _NEXT_PORT))
            except OSError:
                continue
            return _NEXT_PORT
    raise RuntimeError("no free port in 20000-31999")


_NEXT_PORT = 20000 + (os.getpid() * 7919) % 12000
