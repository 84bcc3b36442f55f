"""Unit tests of the streaming pieces: JSON parser at every block boundary, base64 sink, answer
bodies, file types, accept ids."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from webapi.errors import TooLarge
from webapi.mint.codec import jsonstream
from webapi.mint.codec.b64 import BadContent
from webapi.mint.codec.bodies import FilePiece
from webapi.mint.codec.ids import accept_id_of, calc_id_of
from webapi.mint.codec.jsonstream import JsonError, StreamParser
from webapi.mint.codec.mime import sniff
from webapi.mint.server.payloads import Budget, Staging, stream_json

DOC = {
    "a": [1, -2.5e3, True, False, None, 'q"\\/\u00e9\U0001f600\n'],
    "b": {},
    "c": [],
    "計算": "標準",
    "files": {"x": ["QUJD", "m", "c"]},
}


class Collect:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def close(self) -> Any:
        return ("streamed", b"".join(self.parts))


def _parse(raw: bytes, block: int, stream: bool = False) -> Any:
    bio = io.BytesIO(raw)

    def sink_for(path: tuple[str | int, ...], _objects: list[dict[str, Any]]) -> Any:
        return Collect() if stream and path == ("files", "x", 0) else None

    return StreamParser(lambda _n: bio.read(block), sink_for).parse()


@pytest.mark.parametrize("block", [1, 2, 3, 5, 64])
@pytest.mark.parametrize("ascii_only", [True, False])
def test_parser_at_every_boundary(block: int, ascii_only: bool) -> None:
    raw = json.dumps(DOC, ensure_ascii=ascii_only).encode()
    assert _parse(raw, block) == DOC
    doc = json.loads(raw.replace(b'"QUJD"', b'"QU\\/\\u0041"'))
    streamed = _parse(json.dumps(doc).encode(), block, stream=True)
    assert streamed["files"]["x"][0] == ("streamed", b"QU/A")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"a": 1', "ended early"),
        (b'{"a": 1} x', "after the JSON"),
        (b'{"a" 1}', "':'"),
        (b"[1,]", "unexpected character"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'"\\q"', "bad"),
        (b'"a\x01"', "control character"),
        (b"[" * 40 + b"]" * 40, "deeper"),
        (b"1" * 200, "too long"),
        (b"nul", "ended early"),
    ],
)
def test_parser_errors(raw: bytes, words: str) -> None:
    with pytest.raises(JsonError, match=words):
        _parse(raw, 3)


def test_plain_strings_are_capped() -> None:
    raw = json.dumps({"parameters": "x" * 300_000}).encode()
    with pytest.raises(JsonError, match="longer than"):
        _parse(raw, 1 << 16)


def _sink_roundtrip(tmp_path: Path, text: bytes, pieces: int, limit: int = 0) -> bytes:
    with Staging(tmp_path, Budget(limit, "test")) as staging:
        sink = staging.sink("f")
        step = max(1, len(text) // pieces)
        for i in range(0, len(text), step):
            sink.write(text[i : i + step])
        staged = sink.close()
        data = staged.path.read_bytes()
        assert staged.size == len(data)
    assert not any(tmp_path.joinpath("mint-staging").iterdir())
    return data


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 1000, 65537])
@pytest.mark.parametrize("pieces", [1, 3, 7])
def test_base64_sink(tmp_path: Path, size: int, pieces: int) -> None:
    data = os.urandom(size)
    assert _sink_roundtrip(tmp_path, base64.b64encode(data), pieces) == data
    assert _sink_roundtrip(tmp_path, base64.encodebytes(data), pieces) == data  # MIME lines
    unpadded = base64.b64encode(data).rstrip(b"=")
    assert _sink_roundtrip(tmp_path, unpadded, pieces) == data


@pytest.mark.parametrize("bad", [b"QUJD!", b"QQ==QUJD", b"Q", b"QUJD QUJD", b"\xff\xfe"])
def test_base64_sink_refuses_non_base64(tmp_path: Path, bad: bytes) -> None:
    with pytest.raises(BadContent, match="not valid base64"):
        _sink_roundtrip(tmp_path, bad, 2)


def test_base64_sink_quota(tmp_path: Path) -> None:
    with pytest.raises(TooLarge, match="over the quota of 100 bytes"):
        _sink_roundtrip(tmp_path, base64.b64encode(b"x" * 101), 3, limit=100)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 196607, 196608, 196609, 1 << 20])
def test_stream_json_length_and_content(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(size)
    piece = FilePiece(size, lambda: (io.BytesIO(data), size))
    stream = stream_json([b'{"a": "', piece, b'", "b": "' + b"1" * 70000 + b'"}'])
    body = b"".join(stream.chunks)
    assert len(body) == stream.length
    assert base64.b64decode(json.loads(body)["a"]) == data


def test_sniff_types(tmp_path: Path) -> None:
    cases = {
        ("a.txt", b"hello\n"): ("text/plain;", "charset=us-ascii"),
        ("b.txt", "日本語\n".encode()): ("text/plain;", "charset=utf-8"),
        ("c.csv", b"a,b\n"): ("text/csv;", "charset=us-ascii"),
        ("d.png", b"\x89PNG\r\n\x1a\n...."): ("image/png;", "charset=binary"),
        ("e.bin", b"\x00\x01\x02"): ("application/octet-stream;", "charset=binary"),
        ("f", b""): ("inode/x-empty;", "charset=binary"),
    }
    for (name, data), want in cases.items():
        assert sniff(io.BytesIO(data), name) == want, name


def test_accept_ids_map_both_ways() -> None:
    calc_id = "c-" + "0123456789abcdef" * 2
    aid = accept_id_of(calc_id)
    assert aid == "01234567-89ab-cdef-0123-456789abcdef"
    assert calc_id_of(aid) == calc_id == calc_id_of(calc_id) == calc_id_of(aid.upper())
    assert calc_id_of("../etc") is None and calc_id_of(None) is None


def test_block_size_is_small() -> None:
    assert jsonstream.BLOCK <= 1 << 20  # a request's buffers stay far below a file's size
