#!/usr/bin/env python3
"""The kernel's floor under one delivery on this machine.

    python3 bench/floor.py [connections] [sends]

A sender writes 200-byte messages round-robin to N accepted loopback TCP
sockets (TCP_NODELAY, one send() each, as the sidecar writes one WebSocket
frame per delivery); a reader process drains the other ends with epoll, as
the load generator does. Printed: the sender's system CPU per send (which
on loopback includes the receiving side's TCP work and the wake-up of the
reader), its user CPU (Python's own cost, not the kernel's), and the same
with the reader kept busy (10 sockets, so it rarely sleeps between sends).

No server does a delivery to an idle socket with less system CPU than this.
"""

import os
import resource
import select
import socket
import sys


def run(n, sends, size=200):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    port = srv.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        conns = []
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port))
            c.setblocking(False)
            conns.append(c)
        ep = select.epoll()
        by_fd = {}
        for c in conns:
            ep.register(c.fileno(), select.EPOLLIN)
            by_fd[c.fileno()] = c
        got = 0
        while got < sends * size:
            for fd, _ in ep.poll(1):
                try:
                    got += len(by_fd[fd].recv(65536))
                except BlockingIOError:
                    pass
        os._exit(0)
    accepted = [srv.accept()[0] for _ in range(n)]
    for a in accepted:
        a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * size
    before = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(sends):
        accepted[i % n].send(msg)
    after = resource.getrusage(resource.RUSAGE_SELF)
    os.waitpid(pid, 0)
    for a in accepted:
        a.close()
    srv.close()
    return ((after.ru_stime - before.ru_stime) / sends * 1e6, (after.ru_utime - before.ru_utime) / sends * 1e6)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    sends = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    for conns in (n, 10):
        sys_us, user_us = run(conns, sends)
        print(f"{conns} sockets, {sends} sends of 200 B: {sys_us:.2f} µs system CPU per send ({user_us:.2f} µs user, Python)")
