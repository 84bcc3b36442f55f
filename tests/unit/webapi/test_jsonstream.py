"""Edge cases of the fast string scan (find + cached quote/backslash positions + control check)
and of the shared base64 decoder/encoder: every split point, checked against json/base64."""

from __future__ import annotations

import base64
import io
import json
import random
import time
from typing import Any

import pytest

from webapi.mint.codec.b64 import ENCODE_CHUNK, Base64Decoder, encode_blocks
from webapi.mint.codec.jsonstream import JsonError, StreamParser


class Collect:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        assert data  # the parser never hands a sink an empty piece
        self.parts.append(data)

    def close(self) -> Any:
        return b"".join(self.parts)


def parse(raw: bytes, block: int, streamed: tuple[str | int, ...] | None = ("s",)) -> Any:
    bio = io.BytesIO(raw)

    def sink_for(path: tuple[str | int, ...], _objects: list[dict[str, Any]]) -> Any:
        return Collect() if path == streamed else None

    return StreamParser(lambda _n: bio.read(block), sink_for).parse()


VALID = ['\\"', "\\\\", "\\u0041", "\\ud83d\\ude00", "\\n", "é", "😀", "/", "\\/", "x", " "]
INVALID = ['"', "\\", "\x01", "\n", "\\x", "\\ud83d", "\\u12"]


def _random_string(rng: random.Random, pieces: list[str]) -> str:
    """The JSON text of a string (without its quotes), pieces mixed at random."""
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))


def _expected(raw: bytes) -> Any:
    """json.loads' answer, or None where it (or the text rule: no lone surrogate) refuses."""
    try:
        doc = json.loads(raw)
        json.dumps(doc, ensure_ascii=False).encode()
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and set(doc) == {"p", "s", "q"} else None


@pytest.mark.parametrize("seed", range(60))
def test_scan_agrees_with_json_loads(seed: int) -> None:
    rng = random.Random(seed)
    pieces = VALID if seed % 2 else VALID + INVALID
    plain, stream = _random_string(rng, pieces), _random_string(rng, pieces)
    raw = f'{{"p": "{plain}", "s": "{stream}", "q": ["{plain}", "{stream}"]}}'.encode()
    want = _expected(raw)
    for block in (1, 2, 3, 4, 5, 7, 11, 64, 1 << 18):
        if want is None:
            with pytest.raises(JsonError):
                parse(raw, block)
            continue
        got = parse(raw, block)
        assert got["p"] == want["p"] and got["q"] == want["q"], block
        assert got["s"] == want["s"].encode(), block


@pytest.mark.parametrize("block", [1, 2, 3, 4, 5, 6, 7, 13, 1 << 18])
@pytest.mark.parametrize("streamed", [True, False])
def test_control_character_at_every_position(block: int, streamed: bool) -> None:
    """A raw control character is refused wherever it falls against the block edges, and the
    message names its byte offset."""
    pieces = [b"AB", b'\\"', b"\\u00e9", b"CD", b"\\n", b"E"]
    for pad in range(8):  # shifts everything against the block edges
        for at in range(len(pieces) + 1):
            text = b"x" * pad + b"".join(pieces[:at]) + b"\x1f" + b"".join(pieces[at:])
            raw = b'{"s": "' + text + b'"}'
            with pytest.raises(JsonError, match="control character") as err:
                parse(raw, block, ("s",) if streamed else None)
            assert f"at byte {raw.index(0x1F)}:" in str(err.value), (pad, at)


@pytest.mark.parametrize("block", [1, 2, 3, 5, 6, 7, 11, 12, 13])
def test_escapes_split_across_blocks(block: int) -> None:
    text = '\\u00e9\\ud83d\\ude00\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000'
    raw = ('{"s": "' + text + '", "p": "' + text + '"}').encode()
    want = json.loads(raw)
    got = parse(raw, block)
    assert got["p"] == want["p"]
    assert got["s"] == want["s"].encode()


@pytest.mark.parametrize("bad", ["\\q", "\\u12", "\\u12g4", "\\ud83d\\u0041", "\\udc00", "\\ud83d"])
@pytest.mark.parametrize("streamed", [True, False])
def test_bad_escapes(bad: str, streamed: bool) -> None:
    raw = ('{"s": "a' + bad + '"}').encode()
    for block in (1, 3, 1 << 18):
        with pytest.raises(JsonError, match="bad"):
            parse(raw, block, ("s",) if streamed else None)


@pytest.mark.parametrize("block", [1, 5, 1 << 18])
def test_truncated_inside_a_string_or_escape(block: int) -> None:
    whole = b'{"s": "QUJD\\u00e9\\"x", "p": "ab\\ncd"}'
    for cut in range(len(whole)):
        with pytest.raises(JsonError, match="ended early"):
            parse(whole[:cut], block)


def test_many_escapes_and_many_strings_stay_linear() -> None:
    """The cached positions keep the scan linear: a block of escapes, or of small strings, is
    not rescanned to its end for each one (that was 100x slower at these sizes)."""
    esc = "\\n" * 200_000
    many = ", ".join(f'"k{i}": "v{i}"' for i in range(30_000))
    raw = ('{"s": "' + esc + '", "p": {' + many + "}}").encode()
    started = time.perf_counter()
    got = parse(raw, 1 << 18)
    assert time.perf_counter() - started < 5
    assert got["s"] == b"\n" * 200_000 and len(got["p"]) == 30_000 and got["p"]["k7"] == "v7"


# -- base64 ------------------------------------------------------------------------------------
class Decoded(Base64Decoder):
    def __init__(self) -> None:
        super().__init__("a test string")
        self.out = bytearray()

    def _emit(self, raw: bytes) -> None:
        self.out += raw


def decode(pieces: list[bytes]) -> bytes:
    dec = Decoded()
    for piece in pieces:
        dec.write(piece)
    dec.finish()
    assert dec.size == len(dec.out)
    return bytes(dec.out)


@pytest.mark.parametrize("size", [1, 2, 3, 10, 11])
def test_decoder_every_two_way_split(size: int) -> None:
    data = bytes(range(size))
    for text in (base64.b64encode(data), base64.b64encode(data).rstrip(b"=")):
        for i in range(len(text) + 1):
            for j in range(i, len(text) + 1):
                assert decode([text[:i], text[i:j], text[j:]]) == data, (text, i, j)


@pytest.mark.parametrize(
    "pieces",
    [
        [b"QQ", b"==QUJD"],
        [b"QQ=", b"=Q"],
        [b"QQ==", b"QUJD"],
        [b"Q", b"Q", b"=", b"=", b"QUJD"],
        [b"QU", b"J!"],
        [b"QUJ", b"\x00QUJD"],
    ],
)
def test_decoder_refuses_data_after_padding_or_bad_bytes_at_a_split(pieces: list[bytes]) -> None:
    with pytest.raises(ValueError, match="not valid base64"):
        decode(pieces)


class Trickle(io.RawIOBase):
    """A file that answers reads a few bytes at a time (a pipe, a network file system)."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.pos = data, step, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out = self.data[self.pos : self.pos + min(n, self.step)]
        self.pos += len(out)
        return out


@pytest.mark.parametrize("size", [0, 1, ENCODE_CHUNK - 1, ENCODE_CHUNK, 2 * ENCODE_CHUNK + 2])
def test_encoder_tops_up_short_reads(size: int) -> None:
    data = random.Random(size).randbytes(size)
    blocks = list(encode_blocks(Trickle(data, 10_000), size, "f"))  # type: ignore[arg-type]
    assert all(b"=" not in b for b in blocks[:-1])
    assert b"".join(blocks) == base64.b64encode(data)


def test_encoder_notices_a_shrunk_file() -> None:
    with pytest.raises(OSError, match="shrank"):
        list(encode_blocks(io.BytesIO(b"x" * 10), 11, "f"))
