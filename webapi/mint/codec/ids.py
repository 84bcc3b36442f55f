"""Map the original protocol's accept_id (a uuid4 string) to our calc id and back."""

from __future__ import annotations

import re

from webapi.contract.calc import CALC_ID_RE

UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)


def accept_id_of(calc_id: str) -> str:
    """`c-<32 hex>` → the same 128 bits as a dashed uuid string, as the original handed out."""
    h = calc_id[2:]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def calc_id_of(accept_id: object) -> str | None:
    """The calc id for an accept_id (our own ids are accepted too), or None if it is not one."""
    if not isinstance(accept_id, str):
        return None
    # fullmatch: a bare '$' also matches before a final newline ("<uuid>\n" is not an id; the
    # body parser and the OpenAPI pattern refuse it too).
    if CALC_ID_RE.fullmatch(accept_id):
        return accept_id
    if not UUID_RE.fullmatch(accept_id):
        return None
    return "c-" + accept_id.replace("-", "").lower()
