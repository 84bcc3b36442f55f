"""Our cheroot socket files: large reads land whole in one buffer, writes send from a view,
in order with what cheroot buffered, intact when the peer reads slowly (partial sends)."""

from __future__ import annotations

import os
import socket
import threading

from webapi.server.serve import _SocketReader, _SocketWriter

MIB = 1 << 20


def test_a_large_read_returns_exactly_what_was_sent_and_counts_it() -> None:
    a, b = socket.socketpair()
    data = os.urandom(3 * MIB + 123)
    sender = threading.Thread(target=a.sendall, args=(data,))
    sender.start()
    try:
        reader = _SocketReader(b, "rb")
        head = reader.read(10)  # small reads keep cheroot's buffered path
        block = reader.read(2 * MIB)
        rest = reader.read(len(data) - 10 - 2 * MIB)
        assert isinstance(block, bytes) and len(block) == 2 * MIB
        assert head + block + rest == data
        assert reader.bytes_read == len(data)
        a.close()
        assert reader.read(MIB) == b""  # end of stream: empty, as before
    finally:
        sender.join()
        a.close()
        b.close()


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
