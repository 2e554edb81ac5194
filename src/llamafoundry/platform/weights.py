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


GGUF_MAGIC = b"GGUF"


def resolve_weights(model: CatalogModel, weights: Path | None, home: Path, progress: Progress | None = None) -> Path:
    """The GGUF to serve `model`: `weights` when given, else the catalog's download (cached in `home`).

    Raises:
        WeightsError: not a GGUF file, a model that takes images, no download for this model, or the download
            failed.
    """
    if weights is not None:
        if model.accepts_images:
            raise WeightsError(
                f"{model.name} takes images, and llama.cpp here serves text only. Serve it with an "
                "OpenAI-compatible server that takes images (vLLM, for example) and deploy it with --upstream URL."
            )
        return check_gguf(weights)
    if model.weights is None:
        raise WeightsError(
            f"{model.name} cannot run on llama.cpp, so there is nothing to download. Serve it with an "
            "OpenAI-compatible server (vLLM, for example) and deploy it with --upstream URL."
        )
    return download(model.weights, home / "models", progress)


def check_gguf(weights: Path) -> Path:
    """`weights` made absolute, once it is known to be a GGUF file (its first four bytes are `GGUF`): a wrong
    path is refused when the deployment is created, not minutes later when its replica fails to load it."""
    weights = weights.expanduser().resolve()
    if weights.is_dir():
        raise WeightsError(f"The weights path {weights} is a directory. Give the path of a .gguf file in it.")
    if not weights.is_file():
        raise WeightsError(f"The weights file {weights} does not exist (no such file). Give the path of a .gguf file.")
    with weights.open("rb") as file:
        magic = file.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise WeightsError(
            f"{weights} is not a GGUF file (it does not start with 'GGUF'). llama.cpp serves GGUF weights: "
            "convert the model (llama.cpp's convert_hf_to_gguf.py) or download a .gguf build of it."
        )
    return weights


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
