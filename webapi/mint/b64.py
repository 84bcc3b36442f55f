"""Base64 text to bytes and back in pieces, for files carried inside JSON strings (both ends).

Bottle-free, so the client side (`webapi.mintproto`) shares it with the server. The decoder takes
pieces of any length and cuts them on 4-character boundaries without copying the aligned part;
the encoder reads a file in blocks of a multiple of 3 bytes, so the encoded blocks join into one
string with padding at the very end only.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from typing import BinaryIO

# 192 KiB in, 256 KiB out: one b2a_base64 call's input and output stay in the CPU's L2 cache,
# ~35 % faster here than 768 KiB blocks; a multiple of 3, so no block but the last is padded.
ENCODE_CHUNK = 3 * 64 * 1024


def b64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


class Base64Decoder:
    """Decode one base64 text arriving in pieces: strict alphabet, MIME line breaks dropped.

    Subclasses say what a decoded piece goes to (`_emit`) and how a bad text is reported (`_bad`).
    """

    def __init__(self) -> None:
        self._rest = b""  # the 0-3 characters that did not fill a group of 4 yet
        self._padded = False
        self.size = 0

    def _bad(self, why: str) -> Exception:
        raise NotImplementedError

    def _emit(self, raw: bytes) -> None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        if b"\n" in data or b"\r" in data:
            data = data.translate(None, b"\r\n")  # MIME-style line breaks are harmless
        if not data:
            return
        if self._padded:
            raise self._bad("data after the '=' padding")
        view = memoryview(data)
        if self._rest:
            # Complete the pending group on its own rather than copy `rest + data` (a whole
            # block) to realign: the rest of the piece is then decoded in place.
            take = 4 - len(self._rest)
            head = self._rest + bytes(view[:take])
            view = view[take:]
            if len(head) < 4:
                self._rest = head
                return
            self._rest = b""
            self._decode(head)
        cut = len(view) - len(view) % 4
        if cut:
            if self._padded:
                raise self._bad("data after the '=' padding")
            self._decode(view[:cut])
        self._rest = bytes(view[cut:])

    def _decode(self, text: bytes | memoryview) -> None:
        try:
            raw = binascii.a2b_base64(text, strict_mode=True)
        except binascii.Error as exc:
            raise self._bad(str(exc)) from None
        self._padded = text[-1:] == b"="
        self.size += len(raw)
        self._emit(raw)

    def finish(self) -> None:
        """The text ended: decode what is left, tolerating missing '=' padding."""
        if self._rest:
            if len(self._rest) == 1 or self._padded:
                raise self._bad("its length does not fit base64")
            self._decode(self._rest + b"=" * (4 - len(self._rest)))
            self._rest = b""


def encode_blocks(fh: BinaryIO, size: int, what: str) -> Iterator[bytes]:
    """Base64 of the next `size` bytes of `fh`, block by block; OSError if the file ends early."""
    left = size
    while left > 0:
        want = min(ENCODE_CHUNK, left)
        block = fh.read(want)
        while len(block) < want:  # short read: top up, so only the last block may be padded
            more = fh.read(want - len(block))
            if not more:
                done = size - left + len(block)
                raise OSError(f"{what}: the file shrank while it was being sent ({done} of {size})")
            block += more
        left -= want
        yield binascii.b2a_base64(block, newline=False)
