"""Files inside JSON bodies: decode base64 strings to staged files as they arrive, and build answer
bodies that carry files as base64, streamed from disk with an exact Content-Length."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from webapi.atomic import TMP_PREFIX
from webapi.errors import BadRequest, TooLarge
from webapi.http import Stream
from webapi.mint.b64 import Base64Decoder, encode_blocks
from webapi.mint.b64 import b64_length as b64_length  # routes take it with the answer tools
from webapi.mint.jsonstream import JsonError, SinkFor, StreamParser

FLUSH_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class StagedFile:
    """A decoded file waiting in the staging dir (it replaces the base64 string in the doc)."""

    path: Path
    size: int
    sha256: str


class Budget:
    """Decoded bytes allowed for one request (the per-calc quota); 0 = unlimited."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.what, self.used = limit, what, 0

    def take(self, n: int) -> None:
        self.used += n
        if self.limit and self.used > self.limit:
            raise TooLarge(
                f"{self.what}: the files are over the quota of {self.limit} bytes; "
                "nothing was stored"
            )


class Base64Sink(Base64Decoder):
    """Decode one base64 JSON string into a staged file, counted against the request's budget."""

    def __init__(self, path: Path, budget: Budget, label: str) -> None:
        super().__init__()
        self.path, self.budget, self.label = path, budget, label
        self._fh: BinaryIO = open(path, "xb")  # noqa: SIM115 - closed in close()/abort()
        self._digest = hashlib.sha256()

    def _bad(self, why: str) -> BadRequest:
        return BadRequest(f"{self.label}: the content is not valid base64 ({why}); nothing stored")

    def _emit(self, raw: bytes) -> None:
        self.budget.take(len(raw))
        self._digest.update(raw)
        self._fh.write(raw)

    def close(self) -> StagedFile:
        self.finish()
        self._fh.close()
        return StagedFile(self.path, self.size, self._digest.hexdigest())

    def abort(self) -> None:
        self._fh.close()


class Staging:
    """A private temp dir in the data dir for one request's decoded files; always removed."""

    def __init__(self, data_dir: Path, budget: Budget) -> None:
        self.dir = data_dir / "mint-staging" / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        self.budget = budget
        self._sinks: list[Base64Sink] = []

    def __enter__(self) -> Staging:
        self.dir.mkdir(parents=True)
        return self

    def __exit__(self, *exc: object) -> None:
        for sink in self._sinks:
            sink.abort()
        shutil.rmtree(self.dir, ignore_errors=True)

    def sink(self, label: str) -> Base64Sink:
        # Staged names are counters, never the client's names: those are checked separately.
        sink = Base64Sink(self.dir / f"{TMP_PREFIX}{len(self._sinks)}", self.budget, label)
        self._sinks.append(sink)
        return sink


def parse_body(read: Callable[[int], bytes], sink_for: SinkFor) -> dict[str, Any]:
    """Parse a JSON object body, streaming the strings `sink_for` picks; BadRequest if bad."""
    try:
        doc = StreamParser(read, sink_for).parse()
    except JsonError as exc:
        raise BadRequest(f"{exc}; nothing stored") from None
    if not isinstance(doc, dict):
        raise BadRequest("the JSON body must be an object")
    return doc


def open_staged(staged: StagedFile, offset: int = 0) -> BinaryIO:
    fh = open(staged.path, "rb")  # noqa: SIM115 - the caller closes it
    fh.seek(offset)
    return fh


# -- answers ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FilePiece:
    """A file to embed as base64: `opener()` gives (file, size) when the body reaches it."""

    size: int
    opener: Callable[[], tuple[BinaryIO, int]]


Piece = bytes | FilePiece


def js(value: Any) -> bytes:
    """A JSON value as UTF-8 (non-ASCII kept as is, as the original answered)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _encode_file(piece: FilePiece) -> Iterator[bytes]:
    fh, size = piece.opener()
    with contextlib.closing(fh):
        if size != piece.size:
            raise OSError(f"file changed size ({size} != {piece.size} bytes)")
        yield from encode_blocks(fh, size, "an answer's file")


def stream_json(pieces: list[Piece]) -> Stream:
    """An answer made of JSON text and base64'd files, produced while it is sent."""
    length = sum(len(p) if isinstance(p, bytes) else b64_length(p.size) for p in pieces)

    def chunks() -> Iterator[bytes]:
        pending: list[bytes] = []
        size = 0
        for piece in pieces:
            if isinstance(piece, bytes):
                pending.append(piece)
                size += len(piece)
                if size < FLUSH_BYTES:
                    continue
            else:
                if pending:
                    yield b"".join(pending)
                    pending, size = [], 0
                yield from _encode_file(piece)
                continue
            yield b"".join(pending)
            pending, size = [], 0
        if pending:
            yield b"".join(pending)

    return Stream(chunks(), length, 200, (("Content-Type", "application/json; charset=utf-8"),))


def remove_stale_staging(data_dir: Path, idle_seconds: float = 3600) -> None:
    """Remove staging dirs left by a crash: nothing written in them for `idle_seconds` (a live
    upload keeps its files' mtimes fresh; another server process may share the data dir)."""
    root = data_dir / "mint-staging"
    if not root.is_dir():
        return
    now = time.time()
    for entry in root.iterdir():
        with contextlib.suppress(OSError):
            times = [entry.stat().st_mtime] + [f.stat().st_mtime for f in entry.iterdir()]
            if now - max(times) > idle_seconds:
                shutil.rmtree(entry, ignore_errors=True)
