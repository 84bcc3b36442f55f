"""Exception hierarchy of WebAPI mode: each error carries a stable code and an HTTP status."""

from __future__ import annotations


class ApiError(Exception):
    """An error with a stable machine code, an HTTP status and a message for humans."""

    code = "internal"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_json(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message}


class BadRequest(ApiError):
    code, status = "bad_request", 400


class Unauthorized(ApiError):
    code, status = "unauthorized", 401


class Forbidden(ApiError):
    code, status = "forbidden", 403


class NotFound(ApiError):
    code, status = "not_found", 404


class Conflict(ApiError):
    code, status = "conflict", 409


class LengthRequired(ApiError):
    code, status = "length_required", 411


class TooLarge(ApiError):
    code, status = "too_large", 413


class ChecksumMismatch(ApiError):
    code, status = "checksum_mismatch", 422


class OffsetMismatch(Conflict):
    """An upload started at an offset other than the bytes the server already holds."""

    code = "offset_mismatch"

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(message)
        self.offset = offset

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "offset": self.offset}


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid; the message says where and why."""


class TransportError(Exception):
    """The server could not be reached, or the connection broke, even after the retries."""
