"""What `serve --model` names: a GGUF file, a catalog model or a Hugging Face repository, downloaded through the
deployments' verified, resumable path (`platform.weights`, `platform.hub`) into `<data dir>/models/`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llamafoundry.commands.common import download_bar

# owner/repo, then optionally `:FILE.gguf`, `:folder/` or `:QUANT`
_HF_REPO = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?::(?P<choice>.+))?$")
_SPLIT_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")


@dataclass(frozen=True)
class ModelChoice:
    """The file to load, and the name and provider the server reports unless --name/--provider say otherwise."""

    path: Path
    name: str
    provider: str


def resolve_model(spec: str | None, home: Path) -> ModelChoice:
    """The model `spec` names: the demo model (None), a file, a catalog name (its GGUF downloaded and checked,
    served under the catalog name), or `owner/repo[:file]` on Hugging Face (`HF_ENDPOINT`, `HF_TOKEN`).

    Raises:
        FileNotFoundError: `spec` is none of these.
        ValueError: the download failed (`platform.hub.HubError`: a sentence saying why and what to do).
    """
    if spec is None:
        from llamafoundry.model.demo import DEMO_MODEL_NAME, DEMO_MODEL_PROVIDER, demo_model_path

        return ModelChoice(demo_model_path(), DEMO_MODEL_NAME, DEMO_MODEL_PROVIDER)
    path = Path(spec).expanduser()
    if path.is_file():
        return ModelChoice(path, path.stem, "Meta")
    from llamafoundry.platform.catalog import UnknownModelError, find_model

    try:
        model = find_model(spec)
    except UnknownModelError:
        pass
    else:
        return _catalog_model(spec, model.name, home)
    found = _repository(spec)
    if found is None:
        raise FileNotFoundError(
            f"--model {spec}: no such file, catalog model or Hugging Face repository. Give the path of a .gguf file, "
            "a catalog name (`llamafoundry models list`) or owner/repo[:FILE.gguf]."
        )
    return _hub_model(spec, found.group("repo"), found.group("choice"), home)


def _repository(spec: str) -> re.Match[str] | None:
    """`owner/repo[:choice]`, unless `spec` reads as a path (`./x`, `/x`, `~/x`, `dir/x.gguf`, an existing folder)."""
    found = _HF_REPO.match(spec)
    if found is None or spec.startswith((".", "/", "~")) or Path(spec).exists():
        return None
    return None if spec.endswith(".gguf") and not found.group("choice") else found


def _catalog_model(spec: str, name: str, home: Path) -> ModelChoice:
    from llamafoundry.platform.catalog import find_model
    from llamafoundry.platform.weights import WeightsError, resolve_weights

    model = find_model(name)
    with download_bar(model.name) as progress:
        try:
            weights = resolve_weights(model, None, home, progress)
        except WeightsError as exc:
            raise ValueError(f"--model {spec}: {exc}") from None
    return ModelChoice(weights, model.name, model.provider)


def _hub_model(spec: str, repo: str, choice: str | None, home: Path) -> ModelChoice:
    from llamafoundry.platform import hub
    from llamafoundry.platform.weights import check_gguf

    with download_bar(repo) as progress:
        try:
            weights = hub.download(repo, hub.pick_gguf(repo, choice), home / "models", progress=progress)
        except hub.HubError as exc:
            raise ValueError(f"--model {spec}: {exc}") from None
    return ModelChoice(check_gguf(weights), _SPLIT_SUFFIX.sub("", weights.stem), "Meta")
