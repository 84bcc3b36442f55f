"""The original protocol's file-carrying documents, built once for our client and our server:
valid JSON of the original's shape, files as base64, the length known before sending."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from webapi.mint.codec import bodies
from webapi.mint.codec.bodies import FileField, FilePiece, StreamBody, iter_body


def test_calc_info_document(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    (tmp_path / "in.bin").write_bytes(data)
    files = [
        FileField(
            "in.bin",
            FilePiece.of_path(tmp_path / "in.bin"),
            "application/octet-stream;",
            "charset=binary",
        ),
        FileField("missing.txt", None, "", ""),
    ]
    pieces = bodies.calc_info(
        command="solver",
        site="s",
        parameters="p=1",
        files=files,
        wanted=["out.txt", "計算標準出力.txt"],
    )
    raw = b"".join(iter_body(pieces))
    assert len(raw) == len(StreamBody(pieces))
    info = json.loads(raw)["calc-info"]
    assert info["command"] == "solver" and info["remote-site"] == "s"
    assert base64.b64decode(info["parameter_files"]["in.bin"][0]) == data
    assert info["parameter_files"]["missing.txt"] == ["", "", ""]
    assert info["result_files"]["計算標準出力.txt"] == {
        "content": "",
        "mimetype1": "",
        "mimetype2": "",
    }
    assert b"\\u" not in raw  # non-ASCII names travel as UTF-8, as the original sent them


def test_result_files_document_marks_missing_results(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("result\n")
    fields = [
        FileField(
            "r.txt", FilePiece.of_path(tmp_path / "r.txt"), "text/plain;", "charset=us-ascii"
        ),
        bodies.missing("gone.txt", "gone.txt: not made"),
    ]
    doc = json.loads(b"".join(iter_body(bodies.result_files(fields))))
    assert base64.b64decode(doc["r.txt"]["content"]) == b"result\n"
    assert doc["gone.txt"] == {
        "content": "",
        "mimetype1": "Error",
        "mimetype2": "gone.txt: not made",
    }


def test_a_body_can_be_sent_again(tmp_path: Path) -> None:
    """A retried request iterates the body a second time: the same bytes come out."""
    (tmp_path / "f").write_bytes(b"x" * 300_000)
    body = StreamBody(
        bodies.result_files([FileField("f", FilePiece.of_path(tmp_path / "f"), "a;", "b")])
    )
    assert b"".join(body) == b"".join(body)
