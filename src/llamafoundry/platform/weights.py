"""Getting a model's GGUF weights: a file the user gives, or a download from Hugging Face with a checksum.

Downloads go to `<data dir>/models/<repo>/<file>`, through a `.part` file that is renamed only once its SHA-256
matches: the catalog's pinned value when it has one, else the hub's own checksum of the LFS object (the
`X-Linked-Etag` header of the `resolve` URL, which is the file's SHA-256). The hub is `HF_ENDPOINT` (default
https://huggingface.co), and `HF_TOKEN` is sent when set, as huggingface_hub does.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import httpx

from llamafoundry.platform.catalog import CatalogModel, WeightsSource

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
CHUNK_BYTES = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# progress(done_bytes, total_bytes or None)
Progress = Callable[[int, int | None], None]


class WeightsError(ValueError):
    """The weights cannot be had; the message says why and what to do."""


def resolve_weights(model: CatalogModel, weights: Path | None, home: Path, progress: Progress | None = None) -> Path:
    """The GGUF to serve `model`: `weights` when given, else the catalog's download (cached in `home`).

    Raises:
        WeightsError: no such file, no download for this model, or the download failed.
    """
    if weights is not None:
        weights = weights.expanduser().resolve()
        if not weights.is_file():
            raise WeightsError(f"--weights {weights}: no such file. Pass the path of a .gguf file.")
        return weights
    if model.weights is None:
        raise WeightsError(
            f"{model.name} cannot run on llama.cpp, so there is nothing to download. Serve it with an "
            "OpenAI-compatible server (vLLM, for example) and deploy it with --upstream URL."
        )
    return download(model.weights, home / "models", progress)


def hub_url(source: WeightsSource) -> str:
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_HF_ENDPOINT).rstrip("/")
    return f"{endpoint}/{source.hf_repo}/resolve/main/{source.hf_file}"


def download(source: WeightsSource, models_dir: Path, progress: Progress | None = None) -> Path:
    """Download `source` into `models_dir` (skipped when the file is already there) and check its SHA-256."""
    target = models_dir / source.hf_repo / source.hf_file
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    url = hub_url(source)
    headers = {"Authorization": f"Bearer {os.environ['HF_TOKEN']}"} if os.environ.get("HF_TOKEN") else {}
    try:
        with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=30) as response:
            _check_status(response, source)
            expected = source.sha256 or _hub_sha256(response)
            actual = _save(response, part, progress)
    except httpx.TransportError as exc:
        part.unlink(missing_ok=True)
        raise WeightsError(
            f"Could not download {source.hf_file} from {url} ({type(exc).__name__}: {exc}). This machine "
            "may be offline: download the GGUF on a machine that is online and pass it with --weights PATH.gguf."
        ) from None
    if expected is not None and actual != expected:
        part.unlink(missing_ok=True)
        raise WeightsError(
            f"The download of {source.hf_file} is corrupt: its SHA-256 is {actual}, expected {expected}. "
            "It was deleted; run the command again."
        )
    part.rename(target)
    return target


def _check_status(response: httpx.Response, source: WeightsSource) -> None:
    if response.status_code in (401, 403):
        raise WeightsError(
            f"Hugging Face refused {source.hf_repo} ({response.status_code}): the repository may be gated. "
            "Accept its license on the hub and set HF_TOKEN, or pass --weights PATH.gguf."
        )
    if response.status_code != 200:
        raise WeightsError(
            f"Could not download {source.hf_file} from {source.hf_repo}: HTTP {response.status_code}. "
            "Pass --weights PATH.gguf with a file you downloaded yourself."
        )


def _hub_sha256(response: httpx.Response) -> str | None:
    """The SHA-256 the hub states for an LFS file, from the last response (or a redirect) of the chain."""
    for candidate in (response, *reversed(response.history)):
        etag = candidate.headers.get("x-linked-etag", "").strip().strip('"').removeprefix("W/").strip('"')
        if _SHA256.match(etag):
            return etag
    return None


def _save(response: httpx.Response, part: Path, progress: Progress | None) -> str:
    total = int(response.headers["content-length"]) if response.headers.get("content-length") else None
    digest, done = hashlib.sha256(), 0
    with part.open("wb") as out:
        for chunk in response.iter_bytes(CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()
