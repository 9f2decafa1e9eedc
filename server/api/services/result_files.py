"""Serving a result from whichever backend holds it: a local file directly, an object by proxy.

Decision (issue 13): the API proxies object-storage results rather than redirecting to a
presigned S3 URL. Clients keep exactly one kind of URL (the server's signed, expiring one), the
object store can stay on a private network, and single byte ranges are forwarded to S3 so video
players can seek. The cost is that result bytes flow through an API node; put a CDN in front of
`/api/results` if that becomes the bottleneck.
"""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from server.results import ResultStore

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(ValueError):
    """The Range header asks for bytes outside the file."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=a-b` range as inclusive (start, end) within `size`; None for the whole file.

    Multi-range and malformed headers are ignored (the whole file is sent), as RFC 9110 allows.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - length), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or end < start:
        raise RangeNotSatisfiable(header)
    return start, end


def result_response(results: ResultStore, key: str, request: Request, filename: str) -> Response | None:
    """The HTTP response for a stored result (GET or HEAD, ranges honoured); None when it is gone."""
    disposition = f'inline; filename="{filename}"'
    path = results.local_file(key)
    if path is not None:
        return FileResponse(path, media_type="video/mp4", filename=filename, content_disposition_type="inline")
    size = results.size(key)
    if size is None:
        return None
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": disposition}
    try:
        span = parse_range(request.headers.get("range"), size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    start, end = span if span else (0, size - 1)
    headers["Content-Length"] = str(end - start + 1)
    status = 200
    if span:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if request.method == "HEAD" or size == 0:
        return Response(status_code=status, headers=headers, media_type="video/mp4")
    return StreamingResponse(results.read(key, start, end), status_code=status, headers=headers,
                             media_type="video/mp4")


def result_bytes(results: ResultStore, key: str) -> bytes:
    """A whole result in memory (the sync route's `b64_json`, thumbnails)."""
    return b"".join(results.read(key))
