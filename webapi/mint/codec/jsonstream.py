"""Parse one JSON document from a byte stream, handing chosen string values to sinks as they arrive.

The original protocol puts whole files (base64) inside JSON strings. `StreamParser` reads the body
block by block and, for a string whose path the caller asks for, passes its bytes to a sink
instead of building the string; every other value is built normally but size-capped. So a body of
any size is parsed in a few blocks of memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Protocol

Path = tuple[str | int, ...]
# Read like the native upload (webapi.store.files.CHUNK): 1 MiB blocks keep the per-block Python
# work (and the hashing thread's hand-overs) small next to the bytes, and a request's heap small.
BLOCK = 1 << 20
_WS = b" \t\r\n"
_NUMBER_CHARS = frozenset(b"+-0123456789.eE")
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
# Control characters are checked by deleting every other byte (a C loop, ~1 GB/s, several times
# a regex character class); the regex only says where one is once we know there is one.
_NOT_CONTROL = bytes(range(0x20, 0x100))
_CONTROL = re.compile(rb"[\x00-\x1f]")
# Where a short string's segment stops: its closing quote, an escape, or a raw control character.
# One regex call per segment is the cheapest for keys and small values (most strings).
_STOP = re.compile(rb'["\\\x00-\x1f]')
# In a run of base64 with escaped line breaks: the first escape that is not \n or \r (or a
# backslash at the end of what has been read), where such a run must end.
_OTHER_ESCAPE = re.compile(rb"\\(?:[^nr]|\Z)")
_LINE_BREAKS = (ord("n"), ord("r"))
_ESCAPES = {
    ord('"'): b'"',
    ord("\\"): b"\\",
    ord("/"): b"/",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
}


class JsonError(ValueError):
    """The body is not one well-formed JSON document (the message says where)."""


class StringSink(Protocol):
    """Where a streamed string goes. A sink whose class sets `REFUSES_CONTROLS = True` refuses
    every control character itself (a strict base64 decoder does), so the parser only looks for
    the raw CR/LF such a sink would let through (memchr instead of a check of every byte). One
    that also sets `IGNORES_LINE_BREAKS = True` drops CR/LF: escaped line breaks (MIME-wrapped
    base64, one every 76 characters) are then cut out of a whole run at once (bytes.replace)
    instead of one escape at a time (that was ~80x slower than the same base64 unwrapped)."""

    def write(self, data: bytes) -> None:
        """A decoded piece of the string (UTF-8 bytes, escapes resolved)."""

    def close(self) -> Any:
        """The string ended; the return value takes its place in the document."""


# Called with the string's path and the objects being built around it (outermost first, with
# the members parsed so far), so a caller can check e.g. an id that came before the files.
SinkFor = Callable[[Path, list[dict[str, Any]]], StringSink | None]


class StreamParser:
    """Pull-parse `read(n)`'s bytes; `sink_for(path, open_objects)` picks strings to stream."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        sink_for: SinkFor,
        *,
        max_plain: int = 256 * 1024,
        max_depth: int = 32,
    ) -> None:
        self._read = read
        self._sink_for = sink_for
        self.max_plain = max_plain
        self.max_depth = max_depth
        self.buf = b""
        self.pos = 0
        self.offset = 0  # body offset of buf[0], for messages
        self.eof = False
        self.open_objects: list[dict[str, Any]] = []
        # The next '"' at or after pos, and the next '\\' before it (len(buf) / the quote: none),
        # remembered between calls so a string full of escapes is still scanned once; -1: unknown.
        self._quote = self._slash = -1
        self._lines_only = False  # the current streamed string's sink refuses other controls
        self._skip_breaks = False  # ... and drops line breaks

    # -- buffer -------------------------------------------------------------------------------
    def _more(self) -> bool:
        """Append the next block to the unread part of the buffer; False at the end."""
        if self.eof:
            return False
        block = self._read(BLOCK)
        if not block:
            self.eof = True
            return False
        self.offset += self.pos
        # Mostly the buffer is used up (long strings): take the block as is, no copy.
        self.buf = block if self.pos >= len(self.buf) else self.buf[self.pos :] + block
        self.pos = 0
        self._quote = self._slash = -1
        return True

    def _need(self, n: int) -> bool:
        while len(self.buf) - self.pos < n:
            if not self._more():
                return False
        return True

    def _fail(self, what: str) -> JsonError:
        return JsonError(f"malformed JSON body at byte {self.offset + self.pos}: {what}")

    def _ended(self) -> JsonError:
        return JsonError(
            f"the JSON body ended early (after {self.offset + self.pos} bytes): truncated upload?"
        )

    def _peek(self) -> int:
        """The next non-blank byte, not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                raise self._ended()

    def _expect(self, char: bytes) -> None:
        if self._peek() != char[0]:
            raise self._fail(f"expected {char.decode()!r}")
        self.pos += 1

    # -- values -------------------------------------------------------------------------------
    def parse(self) -> Any:
        """The whole document; raises JsonError for bad syntax or bytes after the end."""
        value = self._value((), 0)
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                raise self._fail("unexpected data after the JSON document")
            if not self._more():
                return value

    def _value(self, path: Path, depth: int) -> Any:
        if depth > self.max_depth:
            raise self._fail(f"nested deeper than {self.max_depth} levels")
        c = self._peek()
        if c == ord("{"):
            return self._object(path, depth)
        if c == ord("["):
            return self._array(path, depth)
        if c == ord('"'):
            self.pos += 1
            sink = self._sink_for(path, self.open_objects)
            return self._plain_string() if sink is None else self._streamed_string(sink)
        if c in _NUMBER_CHARS:
            return self._number()
        for word, value in ((b"true", True), (b"false", False), (b"null", None)):
            if c == word[0]:
                if not self._need(len(word)):
                    raise self._ended()
                if self.buf[self.pos : self.pos + len(word)] != word:
                    raise self._fail("unknown literal")
                self.pos += len(word)
                return value
        raise self._fail(f"unexpected character {chr(c)!r}")

    def _object(self, path: Path, depth: int) -> dict[str, Any]:
        self.pos += 1
        out: dict[str, Any] = {}
        if self._peek() == ord("}"):
            self.pos += 1
            return out
        self.open_objects.append(out)
        try:
            return self._members(out, path, depth)
        finally:
            self.open_objects.pop()

    def _members(self, out: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
        while True:
            self._expect(b'"')
            key = self._plain_string()
            if key in out:
                raise self._fail(f"duplicate key {key!r}")
            self._expect(b":")
            out[key] = self._value((*path, key), depth + 1)
            c = self._peek()
            self.pos += 1
            if c == ord("}"):
                return out
            if c != ord(","):
                self.pos -= 1
                raise self._fail("expected ',' or '}'")

    def _array(self, path: Path, depth: int) -> list[Any]:
        self.pos += 1
        out: list[Any] = []
        if self._peek() == ord("]"):
            self.pos += 1
            return out
        while True:
            out.append(self._value((*path, len(out)), depth + 1))
            c = self._peek()
            self.pos += 1
            if c == ord("]"):
                return out
            if c != ord(","):
                self.pos -= 1
                raise self._fail("expected ',' or ']'")

    def _number(self) -> Any:
        # Scan ahead without consuming, so _more keeps the digits read so far.
        length = 0
        while True:
            i = self.pos + length
            while i < len(self.buf) and self.buf[i] in _NUMBER_CHARS:
                i += 1
            length = i - self.pos
            if length > 100:
                raise self._fail("number too long")
            if i < len(self.buf) or not self._more():
                break
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        try:
            return json.loads(raw)
        except ValueError:
            raise self._fail(f"bad number {raw[:20]!r}") from None

    # -- strings ------------------------------------------------------------------------------
    def _stop(self) -> int:
        """Where a streamed string stops: its next '"', '\\' or raw control character, else the
        buffer's end. bytes.find runs at memory speed; the cached positions stay valid until pos
        passes them or the buffer is replaced, so each byte is scanned a bounded number of times.
        """
        buf, pos, quote, slash = self.buf, self.pos, self._quote, self._slash
        if quote < pos:
            quote = buf.find(b'"', pos)
            if quote < 0:
                quote = len(buf)
            self._quote, slash = quote, -1
        if slash < pos:
            # Only up to the quote: a key or short value must not scan the rest of the block.
            slash = buf.find(b"\\", pos, quote)
            if slash < 0:
                slash = quote
            self._slash = slash
        stop = slash
        if stop > pos and self._lines_only:
            for char in (b"\n", b"\r"):
                hit = buf.find(char, pos, stop)
                if hit >= 0:
                    stop = hit
        elif stop > pos and buf[pos:stop].translate(None, _NOT_CONTROL):
            m = _CONTROL.search(buf, pos, stop)
            assert m is not None
            stop = m.start()
        return stop

    def _plain_string(self) -> str:
        """A string built in memory (after its opening quote), at most max_plain bytes."""
        parts: list[bytes] = []
        size = 0
        while True:
            m = _STOP.search(self.buf, self.pos)
            end = m.start() if m else len(self.buf)
            parts.append(self.buf[self.pos : end])
            size += end - self.pos
            self.pos = end
            if size > self.max_plain:
                raise JsonError(
                    f"a JSON string at byte {self.offset + self.pos} is longer than "
                    f"{self.max_plain} bytes (only file contents may be that large)"
                )
            if m is None:
                if not self._more():
                    raise self._ended()
                continue
            c = self.buf[end]
            if c == _QUOTE:
                self.pos += 1
                break
            if c != _BACKSLASH:
                raise self._fail("raw control character in a string")
            if not self._need(2):
                raise self._ended()
            parts.append(self.buf[self.pos : self.pos + 2])  # kept raw; json.loads decodes it
            size += 2
            self.pos += 2
        try:
            text: str = json.loads(b'"' + b"".join(parts) + b'"')
            text.encode("utf-8")  # a lone surrogate escape is valid JSON but not text
        except (ValueError, UnicodeError) as exc:
            raise self._fail(f"bad string ({exc})") from None
        return text

    def _streamed_string(self, sink: StringSink) -> Any:
        """Pass the string (after its opening quote) to `sink` block by block."""
        self._lines_only = getattr(sink, "REFUSES_CONTROLS", False) is True
        self._skip_breaks = self._lines_only and getattr(sink, "IGNORES_LINE_BREAKS", False) is True
        try:
            return self._stream_to(sink)
        finally:
            self._lines_only = self._skip_breaks = False

    def _stream_to(self, sink: StringSink) -> Any:
        while True:
            end = self._stop()
            if end > self.pos:
                # A whole block slices to itself: a long string reaches the sink without a copy.
                sink.write(self.buf[self.pos : end])
                self.pos = end
            if end == len(self.buf):
                if not self._more():
                    raise self._ended()
                continue
            c = self.buf[end]
            if c == _QUOTE:
                self.pos += 1
                return sink.close()
            if c != _BACKSLASH:
                raise self._fail("raw control character in a string")
            if self._skip_breaks and end + 1 < len(self.buf) and self.buf[end + 1] in _LINE_BREAKS:
                self._skip_line_breaks(sink)
            else:
                sink.write(self._escape())

    def _skip_line_breaks(self, sink: StringSink) -> None:
        """At an escaped line break: pass the run up to the next other escape, raw CR/LF, the
        closing quote or the read data's end to `sink` in one piece, its \\n and \\r cut out.
        Every backslash in the run is followed by n or r (the regex stops at any other), so the
        escapes are exactly those pairs and cutting them out cannot join two into a new one."""
        buf, pos = self.buf, self.pos
        quote = buf.find(b'"', pos)
        limit = len(buf) if quote < 0 else quote
        m = _OTHER_ESCAPE.search(buf, pos, limit)
        if m is not None:
            limit = m.start()
        for char in (b"\n", b"\r"):  # raw ones: the normal path refuses them
            hit = buf.find(char, pos, limit)
            if hit >= 0:
                limit = hit
        run = buf[pos:limit].replace(b"\\n", b"").replace(b"\\r", b"")
        if run:
            sink.write(run)
        self.pos = limit

    def _escape(self) -> bytes:
        """Decode one escape sequence at pos (a backslash) to UTF-8 bytes."""
        if not self._need(2):
            raise self._ended()
        kind = self.buf[self.pos + 1]
        if kind in _ESCAPES:
            self.pos += 2
            return _ESCAPES[kind]
        if kind != ord("u"):
            raise self._fail("bad escape sequence")
        # \uXXXX, or a surrogate pair \uD8xx\uDCxx: json.loads decodes and checks it.
        if not self._need(6):
            raise self._ended()
        length = 6
        high = self.buf[self.pos + 2 : self.pos + 3].lower() == b"d"
        if high and self._need(12) and self.buf[self.pos + 6 : self.pos + 8] == b"\\u":
            length = 12
        raw = self.buf[self.pos : self.pos + length]
        try:
            text: str = json.loads(b'"' + raw + b'"')
            data = text.encode("utf-8")
        except (ValueError, UnicodeError):
            raise self._fail("bad \\u escape") from None
        self.pos += length
        return data
