"""Getting a model's GGUF weights: a file the user gives, or the catalog's download from Hugging Face.

Downloads go to `<data dir>/models/<repo>/<file>` through `platform.hub`: resumable, checked against the catalog's
pinned SHA-256 or the hub's own checksum, and split files downloaded whole.
"""

from __future__ import annotations

import threading
from pathlib import Path

from llamafoundry.platform import hub
from llamafoundry.platform.catalog import CatalogModel, WeightsSource
from llamafoundry.platform.hub import Progress

# The weights cannot be had; the message says why and what to do (a download's failures are the hub's errors).
WeightsError = hub.HubError


GGUF_MAGIC = b"GGUF"


def resolve_weights(
    model: CatalogModel,
    weights: Path | None,
    home: Path,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """The GGUF to serve `model`: `weights` when given, else the catalog's download (cached in `home`).

    Raises:
        WeightsError: not a GGUF file, a model that takes images, no download for this model, or the download
            failed.
    """
    if weights is not None:
        if model.accepts_images and model.weights is None:
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
    return download(model.weights, home / "models", progress, cancel)


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
    return hub.resolve_url(source.hf_repo, source.hf_file)


def download(
    source: WeightsSource,
    models_dir: Path,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Download `source` into `models_dir` (resumed from a `.part` file, every part of a split file, skipped when
    already there) and check its SHA-256; the file llama.cpp loads (a split file's first part)."""
    return hub.download(source.hf_repo, source.hf_file, models_dir, source.sha256, progress, cancel)
