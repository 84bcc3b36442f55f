"""Build the original protocol's file-carrying JSON bodies as pieces, and produce them while they
are sent: text pieces as they are, files as base64 read from disk, with the exact length known
beforehand. Our client (requests) and our server (Bottle answers) send the same documents."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from webapi.mint.codec.b64 import b64_length, encode_blocks

# Text pieces are joined up to this size before they are handed on (fewer, larger writes).
FLUSH_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class FilePiece:
    """A file to embed as a base64 string: `opener()` gives (file, size) when the body reaches it;
    `size` is fixed when the body is built, so the body's length is known up front."""

    size: int
    opener: Callable[[], tuple[BinaryIO, int]]

    @classmethod
    def of_path(cls, path: Path) -> FilePiece:
        def opener() -> tuple[BinaryIO, int]:
            fh = path.open("rb")
            return fh, os.fstat(fh.fileno()).st_size

        return cls(path.stat().st_size, opener)


Piece = bytes | FilePiece


@dataclass(frozen=True, slots=True)
class FileField:
    """One named file of a document; `piece` None sends an empty string (or the Error mark)."""

    name: str
    piece: FilePiece | None
    mime1: str
    mime2: str


def js(value: Any) -> bytes:
    """A JSON value as UTF-8 (non-ASCII kept as is, as the original sent it)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def body_length(pieces: Iterable[Piece]) -> int:
    return sum(len(p) if isinstance(p, bytes) else b64_length(p.size) for p in pieces)


def _encode_file(piece: FilePiece) -> Iterator[bytes]:
    fh, size = piece.opener()
    with contextlib.closing(fh):
        if size != piece.size:
            raise OSError(f"a file changed size before it was sent ({size} != {piece.size} bytes)")
        yield from encode_blocks(fh, piece.size, "a file being sent")


def iter_body(pieces: list[Piece]) -> Iterator[bytes]:
    """The body's bytes block by block; each call starts over (a retried request resends)."""
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        if isinstance(piece, bytes):
            pending.append(piece)
            size += len(piece)
            if size >= FLUSH_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
            continue
        if pending:
            yield b"".join(pending)
            pending, size = [], 0
        yield from _encode_file(piece)
    if pending:
        yield b"".join(pending)


class StreamBody:
    """A body for `requests`: `len()` gives Content-Length, iteration produces the bytes."""

    def __init__(self, pieces: list[Piece]) -> None:
        self.pieces = pieces
        self.length = body_length(pieces)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        return iter_body(self.pieces)


def calc_info(
    *, command: str, site: str, parameters: Any, files: Iterable[FileField], wanted: Iterable[str]
) -> list[Piece]:
    """`{"calc-info": {command, remote-site, parameters, parameter_files, result_files}}`:
    each parameter file is `[base64, mime, charset]`, each wanted result an empty slot."""
    pieces: list[Piece] = [
        b'{"calc-info": {"command": '
        + js(command)
        + b', "remote-site": '
        + js(site)
        + b', "parameters": '
        + js(parameters)
        + b', "parameter_files": {'
    ]
    for i, field in enumerate(files):
        pieces.append((b", " if i else b"") + js(field.name) + b': ["')
        if field.piece is not None:
            pieces.append(field.piece)
        pieces.append(b'", ' + js(field.mime1) + b", " + js(field.mime2) + b"]")
    empty = b': {"content": "", "mimetype1": "", "mimetype2": ""}'
    pieces.append(b'}, "result_files": {' + b", ".join(js(n) + empty for n in wanted) + b"}}}")
    return pieces


def result_files(files: Iterable[FileField]) -> list[Piece]:
    """`{"name": {"content": base64, "mimetype1", "mimetype2"}, …}`; a file without a piece is
    sent as the original's error mark: empty content, mimetype1 "Error", mimetype2 the reason."""
    pieces: list[Piece] = [b"{"]
    for i, field in enumerate(files):
        pieces.append((b", " if i else b"") + js(field.name) + b': {"content": "')
        if field.piece is not None:
            pieces.append(field.piece)
        pieces.append(
            b'", "mimetype1": ' + js(field.mime1) + b', "mimetype2": ' + js(field.mime2) + b"}"
        )
    pieces.append(b"}")
    return pieces


def missing(name: str, why: str) -> FileField:
    """The error mark for a result that is not there."""
    return FileField(name, None, "Error", why)
