"""The fast base64 path (pybase64) accepts and produces exactly what binascii's strict decoder
does, piece by piece as the decoder is fed, and the fallback without pybase64 behaves alike."""

from __future__ import annotations

import base64
import binascii
import itertools
import random

import pytest

from webapi.mint.codec import b64
from webapi.mint.codec.b64 import BadContent, Base64Decoder, decode_strict, encode

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Mostly the alphabet, with the characters a strict decoder must refuse (or place) mixed in.
ODD = b"=\n\r -_.\x00\xff"


def _reference(text: bytes) -> bytes | None:
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        return None


def test_pybase64_is_installed_and_used() -> None:
    """The api and poll extras install it: without it the original protocol is ~5x slower."""
    assert b64.FAST


@pytest.mark.parametrize("seed", range(40))
def test_decode_strict_agrees_with_binascii(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(500):
        n = 4 * rng.randint(0, 6)
        chars = [rng.choice(ALPHABET if rng.random() < 0.9 else ODD) for _ in range(n)]
        if rng.random() < 0.5 and n:  # padding at the end, often
            pad = rng.randint(1, 3)
            chars[-pad:] = b"=" * pad
        text = bytes(chars)
        want = _reference(text)
        if want is None:
            with pytest.raises(binascii.Error):
                decode_strict(text)
        else:
            assert decode_strict(text) == want, text
            assert decode_strict(memoryview(text)) == want, text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (b"QQ=A", "Discontinuous padding"),
        (b"QQ==QUJD", "Excess data after padding"),
        (b"====", "Leading padding"),
        (b"QU-_", "Only base64 data"),
    ],
)
def test_a_refusal_keeps_binasciis_words(text: bytes, words: str) -> None:
    with pytest.raises(binascii.Error, match=words):
        decode_strict(text)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 191, 192 * 1024 + 1])
def test_encode_is_standard_base64(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert encode(data) == base64.b64encode(data)


class Decoded(Base64Decoder):
    def __init__(self) -> None:
        super().__init__("f")
        self.out = bytearray()

    def _emit(self, raw: bytes) -> None:
        self.out += raw


def _feed(pieces: list[bytes]) -> bytes | str:
    dec = Decoded()
    try:
        for piece in pieces:
            dec.write(piece)
        dec.finish()
    except BadContent as exc:
        return str(exc)
    return bytes(dec.out)


@pytest.mark.parametrize("seed", range(10))
def test_the_fallback_decoder_gives_the_same_answers(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random texts (good and bad) cut at random: the same bytes or the same message with and
    without pybase64."""
    rng = random.Random(seed)
    cases = []
    for _ in range(200):
        text = bytearray(base64.b64encode(rng.randbytes(rng.randint(0, 40))))
        if rng.random() < 0.3 and text:
            text[rng.randrange(len(text))] = rng.choice(ODD)
        if rng.random() < 0.2:
            text = bytearray(text.rstrip(b"="))
        cuts = sorted(rng.randint(0, len(text)) for _ in range(rng.randint(0, 3)))
        bounds = [0, *cuts, len(text)]
        cases.append([bytes(text[a:b]) for a, b in itertools.pairwise(bounds)])
    fast = [_feed(pieces) for pieces in cases]
    monkeypatch.setattr(b64, "FAST", False)
    assert [_feed(pieces) for pieces in cases] == fast
