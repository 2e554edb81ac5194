"""Reading a request body within the size limit (`protocol.bounds.MAX_BODY_BYTES`)."""

from __future__ import annotations

from starlette.requests import Request

from llamafoundry.api.context import context_of
from llamafoundry.protocol.bounds import MAX_BODY_BYTES
from llamafoundry.protocol.errors import ApiError


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 past MAX_BODY_BYTES (before it is all read when its length is declared);
    kept in the request's context, so a second reader (the handler after authorization) gets it too."""
    context = context_of(request)
    if context.body is not None:
        return context.body
    too_large_body = ApiError(
        413,
        "PayloadTooLarge",
        f"The request body is larger than {MAX_BODY_BYTES // 2**20} MiB. Send fewer or shorter messages.",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large_body
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large_body
        chunks.append(chunk)
    context.body = b"".join(chunks)
    return context.body
