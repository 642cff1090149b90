"""The request body of a tracking call: read once under a size cap, decompressed, parsed.

The cap applies to the decompressed bytes and is checked while inflating, so a small gzip bomb
is cut off after at most `limit` bytes of output instead of filling memory.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

import orjson
from starlette.requests import Request

from audience.errors import AudienceError

MAX_BODY_BYTES = 4 * 1024 * 1024
_GZIP = 16 + zlib.MAX_WBITS  # wbits for a gzip header and trailer


class BodyTooLarge(AudienceError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            "payload_too_large",
            f"the request body is over {limit} bytes (measured after decompression)",
            status=413,
        )


async def read_body(request: Request, *, limit: int = MAX_BODY_BYTES) -> bytes:
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return await _read_gzip(request, limit)
    if encoding not in ("", "identity"):
        raise AudienceError(
            "unsupported_encoding",
            f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding",
            status=415,
        )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_gzip(request: Request, limit: int) -> bytes:
    inflater = zlib.decompressobj(_GZIP)
    chunks: list[bytes] = []
    size = 0
    started = False
    try:
        async for chunk in request.stream():
            pending = chunk
            while pending:
                started = True
                if inflater.eof:  # a concatenated gzip member follows
                    inflater = zlib.decompressobj(_GZIP)
                # Ask for one byte more than the room left: getting it means over the limit.
                out = inflater.decompress(pending, limit - size + 1)
                size += len(out)
                if size > limit:
                    raise BodyTooLarge(limit)
                chunks.append(out)
                pending = inflater.unused_data if inflater.eof else b""
        if started and not inflater.eof:
            raise zlib.error("truncated")
    except zlib.error:
        raise AudienceError(
            "invalid_body", "the body is not valid gzip (Content-Encoding: gzip)"
        ) from None
    return b"".join(chunks)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _integer(text: str) -> int | float:
    # orjson turns integers beyond 64 bits into floats; the fallback does the same.
    value = int(text)
    return value if -(2**63) <= value < 2**64 else float(value)


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> Any:
    """Parses with orjson; invalid JSON is a 400 `invalid_json` naming where.

    orjson refuses a whole document for one lone surrogate escape (`"\\ud800"`), which would sink
    a batch for one bad message; the standard parser accepts those, and the per-message check
    then rejects just that message.
    """
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = str(exc)
    try:
        return json.loads(body, parse_float=_finite, parse_int=_integer, parse_constant=_constant)
    except (ValueError, RecursionError):
        raise AudienceError(
            "invalid_json", f"the request body is not valid JSON: {error}"
        ) from None
