"""Our cheroot socket writer: it sends from a view of each block, in order with what cheroot
buffered, intact when the peer reads slowly (many partial sends)."""

from __future__ import annotations

import os
import socket
import threading

from webapi.server.serve import _SocketWriter

MIB = 1 << 20


def test_writes_arrive_whole_and_in_order_through_partial_sends() -> None:
    a, b = socket.socketpair()
    # A small send buffer forces many partial sends of each block.
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    blocks = [b"HTTP/1.1 200 OK\r\n\r\n", os.urandom(2 * MIB), os.urandom(MIB + 7)]
    got = bytearray()

    def drain() -> None:
        while chunk := b.recv(7000):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        writer = _SocketWriter(a, "wb")
        for block in blocks:
            assert writer.write(block) == len(block)
        writer.flush()
        assert writer.bytes_written == sum(map(len, blocks))
        a.shutdown(socket.SHUT_WR)
        reader.join()
        assert bytes(got) == b"".join(blocks)
    finally:
        a.close()
        b.close()
