"""Base64 text to bytes and back in pieces, for files carried inside JSON strings (both ends).

Bottle-free, so the client side (`webapi.mint.client`) shares it with the server. The decoder takes
pieces of any length and cuts them on 4-character boundaries without copying the aligned part;
the encoder reads a file in blocks of a multiple of 3 bytes, so the encoded blocks join into one
string with padding at the very end only.

Both directions use pybase64 (SIMD; ~5x binascii here, where the base64 decode was half of an
add-calcinfo's time) when it is installed, binascii otherwise: the two accept exactly the same
texts (tests/unit/webapi/test_b64_fast.py checks it), and binascii words the error.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from webapi.hashing import BackgroundHash

try:
    from pybase64 import b64decode as _fast_decode
    from pybase64 import b64encode as _fast_encode

    FAST = True
except ImportError:  # pragma: no cover - the api and poll extras install it
    FAST = False

# 768 KiB in, 1 MiB out: the native download's block (webapi.store / routing send 1 MiB), so an
# answer costs the server's writer and TLS as many sends. A multiple of 3: no block but the last
# is padded. (192 KiB kept binascii's input and output in L2, ~35 % faster with binascii; with
# pybase64 the block size makes no measurable difference to the encode itself.)
ENCODE_CHUNK = 3 * 256 * 1024


def decode_strict(text: bytes | memoryview) -> bytes:
    """Whole groups of 4 (strict alphabet, '=' only at the end) to bytes; binascii.Error if bad."""
    if FAST:
        try:
            return _fast_decode(text, validate=True)
        except (binascii.Error, ValueError):
            pass  # refused: binascii says precisely why (pybase64 only says "non-base64 digit")
    return binascii.a2b_base64(text, strict_mode=True)


def encode(block: bytes) -> bytes:
    """Base64 of `block` without a newline."""
    if FAST:
        return _fast_encode(block)
    return binascii.b2a_base64(block, newline=False)


# Decoded pieces shorter than this are gathered before they are written (see FileSink).
SMALL_WRITE = 64 * 1024
# How often FileSink asks for writeback: as the native upload (webapi.store.sink).
WRITEBACK_BYTES = 16 << 20


def b64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


class BadContent(ValueError):
    """A base64 string that cannot be decoded; the message names the file it was for."""


@dataclass(frozen=True, slots=True)
class DecodedFile:
    """A base64 string decoded into `path` (it takes the string's place in the parsed document)."""

    path: Path
    size: int
    sha256: str


class Base64Decoder:
    """Decode one base64 text arriving in pieces: strict alphabet, MIME line breaks dropped.

    Subclasses say what a decoded piece goes to (`_emit`); a bad text raises BadContent.
    """

    # The strict alphabet refuses every control character (CR/LF are dropped before decoding,
    # and the JSON parser refuses them raw): the parser need not check each byte (jsonstream).
    REFUSES_CONTROLS = True
    # CR/LF are dropped (MIME line breaks are harmless): the parser may cut escaped ones out.
    IGNORES_LINE_BREAKS = True

    def __init__(self, label: str) -> None:
        self.label = label
        self._rest = b""  # the 0-3 characters that did not fill a group of 4 yet
        self._padded = False
        self.size = 0

    def _bad(self, why: str) -> BadContent:
        return BadContent(f"{self.label}: the content is not valid base64 ({why})")

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
            raw = decode_strict(text)
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
        yield encode(block)


class FileSink(Base64Decoder):
    """Decode one base64 JSON string into a new file, hashing it on the way.

    `take(n)` is told of every decoded block (a quota may refuse it by raising); `sync` fsyncs
    the file when the string ends (the poller's and client's files are final when decoded);
    `writeback(fd, offset, length)` is called every WRITEBACK_BYTES, so the disk starts writing
    while the body still arrives and the fsync that comes before the answer waits for little
    (the server passes webapi.store.sink.start_writeback, as its native uploads do).
    """

    def __init__(
        self,
        path: Path,
        label: str,
        *,
        take: Callable[[int], None] | None = None,
        sync: bool = False,
        writeback: Callable[[int, int, int], None] | None = None,
    ) -> None:
        super().__init__(label)
        self.path, self._take, self._sync, self._writeback = path, take, sync, writeback
        # Unbuffered: decoded pieces are mostly large (a read block's worth); small ones (the
        # 1-3 bytes completing a group split between two pieces, or the lines of MIME-wrapped
        # base64 between escaped line breaks) are gathered in _small first.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        self._small = bytearray()
        self._written = self._flushed = 0
        # Hashed on a helper thread while this one parses, decodes and writes.
        self._digest = BackgroundHash()

    def _emit(self, raw: bytes) -> None:
        if self._take is not None:
            self._take(len(raw))
        if len(raw) < SMALL_WRITE:
            self._small += raw
            if len(self._small) < SMALL_WRITE:
                return
            raw, self._small = bytes(self._small), bytearray()
        elif self._small:
            self._write(bytes(self._small))
            self._small = bytearray()
        self._write(raw)

    def _write(self, data: bytes) -> None:
        # Hashed in the same gathered blocks: a thread hand-over per 57-byte line of MIME-wrapped
        # base64 made such a body 200x slower than one without line breaks.
        self._digest.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._written += len(data)
        if self._writeback is not None and self._written - self._flushed >= WRITEBACK_BYTES:
            self._writeback(self._fd, self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def close(self) -> DecodedFile:
        self.finish()
        if self._small:
            self._write(bytes(self._small))
            self._small = bytearray()
        if self._sync:
            os.fsync(self._fd)
        self._close_fd()
        return DecodedFile(self.path, self.size, self._digest.hexdigest())

    def abort(self) -> None:
        self._digest.close()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class Discard:
    """Reads past a string nobody wants (e.g. the inputs of a calc that will be refused)."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> str:
        return ""
