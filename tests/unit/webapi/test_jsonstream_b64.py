"""The parser's fast paths for base64 strings (a sink that refuses control characters and drops
line breaks: codec.b64): every read boundary, escapes, MIME line breaks, truncation — checked
against json.loads + the decoder fed the whole string at once."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from webapi.mint.codec.b64 import BadContent, Base64Decoder, DecodedFile, FileSink
from webapi.mint.codec.jsonstream import JsonError, StreamParser


class Decoded(Base64Decoder):
    def __init__(self) -> None:
        super().__init__("the test file")
        self.out = bytearray()

    def _emit(self, raw: bytes) -> None:
        self.out += raw

    def close(self) -> bytes:
        self.finish()
        return bytes(self.out)


def parse(raw: bytes, block: int) -> Any:
    bio = io.BytesIO(raw)
    return StreamParser(
        lambda _n: bio.read(block), lambda path, _o: Decoded() if path == ("f", 0) else None
    ).parse()


def oracle(text: str) -> bytes | None:
    """The string decoded in one piece, no parser involved (None: refused)."""
    dec = Decoded()
    try:
        dec.write(text.encode("utf-8"))
        return dec.close()
    except (BadContent, UnicodeError):
        return None


def doc(inner: bytes, pad: int = 0) -> bytes:
    return b'{"k": "' + b"x" * pad + b'", "f": ["' + inner + b'", "m", "c"]}'


DATA = bytes(range(256)) * 3
MIME = json.dumps(base64.encodebytes(DATA).decode())[1:-1].encode()  # "...\n..." escaped


@pytest.mark.parametrize("block", [1, 2, 3, 4, 5, 7, 11, 76, 77, 78, 79, 1 << 20])
@pytest.mark.parametrize(
    "inner",
    [
        base64.b64encode(DATA),
        MIME,
        MIME.replace(b"\\n", b"\\r\\n"),
        MIME.replace(b"/", b"\\/"),  # an escaped slash between the line breaks
        MIME.replace(b"\\n", b"\\u000a"),  # the same line break as a \u escape
        b"\\n\\r\\n" + base64.b64encode(DATA).rstrip(b"=") + b"\\n\\n",
    ],
    ids=["plain", "mime", "crlf", "slash", "u000a", "edges"],
)
def test_every_read_boundary(block: int, inner: bytes) -> None:
    for pad in range(4):  # shifts the string against the block edges
        assert parse(doc(inner, pad), block)["f"][0] == DATA, pad


PIECES = [
    "QUJD",
    "QUJDRA",
    "\\n",
    "\\r",
    "\\r\\n",
    "\\/",
    "\\u0041",
    "\\u000a",
    "\\\\n",  # an escaped backslash, then the letter n: not a line break
    "\\\\",
    '\\"',
    "\\t",
    "==",
    "\n",  # raw: not JSON
    "\x01",
]


@pytest.mark.parametrize("seed", range(40))
def test_random_strings_agree_with_json_and_the_plain_decoder(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(30):
        inner = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 10)))
        raw = doc(inner.encode())
        try:
            text = json.loads(raw)["f"][0]
        except ValueError:
            # Not JSON: refused, as malformed JSON or (a raw control character other than CR/LF,
            # left to the strict decoder) as not base64; both are a 400, nothing stored.
            for block in (1, 3, 1 << 20):
                with pytest.raises((JsonError, BadContent)):
                    parse(raw, block)
            continue
        want = oracle(text)
        for block in (1, 2, 3, 5, 1 << 20):
            if want is None:
                with pytest.raises(BadContent):
                    parse(raw, block)
            else:
                assert parse(raw, block)["f"][0] == want, (inner, block)


@pytest.mark.parametrize("bad", [b"\n", b"\r", b"\x01", b"\x1f"])
@pytest.mark.parametrize("block", [1, 5, 1 << 20])
def test_a_raw_control_character_is_refused_where_it_is(bad: bytes, block: int) -> None:
    for at in (0, 10, 76, 78, 156, len(MIME) - 2, len(MIME)):  # between escapes (76 + 2)
        raw = doc(MIME[:at] + bad + MIME[at:])
        with pytest.raises((JsonError, BadContent)) as err:
            parse(raw, block)
        if bad in b"\r\n":  # the base64 sink would drop these: the parser must refuse them
            assert isinstance(err.value, JsonError)
            assert f"at byte {raw.index(bad)}:" in str(err.value)


@pytest.mark.parametrize("block", [1, 7, 1 << 20])
def test_truncated_anywhere(block: int) -> None:
    whole = doc(MIME[:300])
    for cut in range(len(whole)):
        with pytest.raises(JsonError, match="ended early"):
            parse(whole[:cut], block)


def test_file_sink_hashes_and_writes_what_it_decodes(tmp_path: Path) -> None:
    """FileSink on the fast path (pieces large and tiny, MIME lines): the file and its sha256."""
    data = random.Random(1).randbytes(3 << 20)
    for i, inner in enumerate(
        (base64.b64encode(data), json.dumps(base64.encodebytes(data).decode())[1:-1].encode())
    ):
        path = tmp_path / f"f{i}"
        calls: list[tuple[int, int]] = []
        bio = io.BytesIO(doc(inner))

        def sink_for(
            p: tuple[str | int, ...], _o: object, path: Path = path, calls: list[Any] = calls
        ) -> Any:
            if p != ("f", 0):
                return None
            return FileSink(path, "f", writeback=lambda _fd, o, n: calls.append((o, n)))

        got = StreamParser(bio.read, sink_for).parse()["f"][0]
        assert isinstance(got, DecodedFile)
        assert path.read_bytes() == data and got.size == len(data)
        assert got.sha256 == hashlib.sha256(data).hexdigest()
        assert calls == []  # below WRITEBACK_BYTES: nothing asked


def test_file_sink_asks_for_writeback_as_it_goes(tmp_path: Path) -> None:
    from webapi.mint.codec import b64

    size = 3 * b64.WRITEBACK_BYTES + 5
    calls: list[tuple[int, int]] = []
    sink = FileSink(tmp_path / "f", "f", writeback=lambda _fd, o, n: calls.append((o, n)))
    text = base64.b64encode(b"\0" * size)
    for i in range(0, len(text), 1 << 20):
        sink.write(text[i : i + (1 << 20)])
    assert sink.close().size == size
    # Every WRITEBACK_BYTES or a little more (whole written blocks), back to back from 0.
    assert len(calls) == 2 and calls[0][0] == 0
    assert all(b64.WRITEBACK_BYTES <= n < b64.WRITEBACK_BYTES + (1 << 20) for _o, n in calls)
    assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(calls))
