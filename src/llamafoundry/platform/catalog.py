"""The model catalog: the Meta Llama family as Azure AI Foundry lists it, and the instance types of managed compute.

Prices are Azure's published pay-as-you-go prices for serverless Llama deployments (USD per 1,000 tokens) at the
time of writing; they are defaults, for cost estimates only, and a deployment can override them. Models that
Azure offers on managed compute only have no per-token price: they are billed by core-hours.

Weights: llama.cpp serves GGUF files, so each entry names a community GGUF conversion on Hugging Face that
`llamafoundry deploy create` downloads when no `--weights` file is given (see `platform.weights`). Llama 3.2
Vision has no llama.cpp support: those entries have no download and are deployed with `--upstream`.
"""

from __future__ import annotations

from dataclasses import dataclass

SERVERLESS = "serverless"
MANAGED = "managed"
DEPLOYMENT_TYPES = (SERVERLESS, MANAGED)
BOTH = (SERVERLESS, MANAGED)
MANAGED_ONLY = (MANAGED,)

CONTEXT_128K = 131072


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's GGUF weights come from when the user gives no file.

    Attributes:
        hf_repo: Hugging Face repository (`owner/name`).
        hf_file: file in that repository.
        sha256: expected SHA-256 of the file; when None, the hub's own checksum (the `X-Linked-Etag` of an LFS
            file) is checked instead.
    """

    hf_repo: str
    hf_file: str
    sha256: str | None = None


@dataclass(frozen=True)
class CatalogModel:
    """One catalog entry.

    Attributes:
        name: the Azure model name, reported by `/info` (`model_name`).
        provider: `model_provider_name`.
        context_length: tokens of context the model was trained for.
        input_modalities, output_modalities: `text`, `image`.
        supports_tools: whether the model can call tools (functions).
        deployment_types: `serverless` and/or `managed`.
        is_preview: listed as preview on Azure.
        input_price_per_1k, output_price_per_1k: default serverless prices in USD; None where Azure offers the
            model on managed compute only.
        weights: the GGUF to download, or None when llama.cpp cannot run the model (deploy it with --upstream).
    """

    name: str
    context_length: int
    input_modalities: tuple[str, ...]
    supports_tools: bool
    deployment_types: tuple[str, ...]
    is_preview: bool
    input_price_per_1k: float | None
    output_price_per_1k: float | None
    weights: WeightsSource | None
    provider: str = "Meta"
    output_modalities: tuple[str, ...] = ("text",)

    @property
    def accepts_images(self) -> bool:
        return "image" in self.input_modalities

    def allows(self, deployment_type: str) -> bool:
        return deployment_type in self.deployment_types


TEXT = ("text",)
TEXT_IMAGE = ("text", "image")


def _bartowski(name: str) -> WeightsSource:
    return WeightsSource(f"bartowski/{name}-GGUF", f"{name}-Q4_K_M.gguf")


CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel("Llama-3.2-1B", CONTEXT_128K, TEXT, False, MANAGED_ONLY, True, None, None, _bartowski("Llama-3.2-1B")),
    CatalogModel(
        "Llama-3.2-1B-Instruct",
        CONTEXT_128K,
        TEXT,
        True,
        MANAGED_ONLY,
        True,
        None,
        None,
        _bartowski("Llama-3.2-1B-Instruct"),
    ),
    CatalogModel("Llama-3.2-3B", CONTEXT_128K, TEXT, False, MANAGED_ONLY, True, None, None, _bartowski("Llama-3.2-3B")),
    CatalogModel(
        "Llama-3.2-3B-Instruct",
        CONTEXT_128K,
        TEXT,
        True,
        MANAGED_ONLY,
        True,
        None,
        None,
        _bartowski("Llama-3.2-3B-Instruct"),
    ),
    CatalogModel(
        "Llama-Guard-3-1B",
        CONTEXT_128K,
        TEXT,
        False,
        MANAGED_ONLY,
        True,
        None,
        None,
        WeightsSource("QuantFactory/Llama-Guard-3-1B-GGUF", "Llama-Guard-3-1B.Q4_K_M.gguf"),
    ),
    CatalogModel("Llama-Guard-3-11B-Vision", CONTEXT_128K, TEXT_IMAGE, False, MANAGED_ONLY, True, None, None, None),
    CatalogModel("Llama-3.2-11B-Vision-Instruct", CONTEXT_128K, TEXT_IMAGE, False, BOTH, True, 0.00037, 0.00037, None),
    CatalogModel("Llama-3.2-90B-Vision-Instruct", CONTEXT_128K, TEXT_IMAGE, False, BOTH, True, 0.00204, 0.00204, None),
    CatalogModel(
        "Meta-Llama-3.1-8B",
        CONTEXT_128K,
        TEXT,
        False,
        MANAGED_ONLY,
        False,
        None,
        None,
        _bartowski("Meta-Llama-3.1-8B"),
    ),
    CatalogModel(
        "Meta-Llama-3.1-8B-Instruct",
        CONTEXT_128K,
        TEXT,
        True,
        BOTH,
        False,
        0.0003,
        0.00061,
        _bartowski("Meta-Llama-3.1-8B-Instruct"),
    ),
    CatalogModel(
        "Meta-Llama-3.1-70B",
        CONTEXT_128K,
        TEXT,
        False,
        MANAGED_ONLY,
        False,
        None,
        None,
        _bartowski("Meta-Llama-3.1-70B"),
    ),
    CatalogModel(
        "Meta-Llama-3.1-70B-Instruct",
        CONTEXT_128K,
        TEXT,
        True,
        BOTH,
        False,
        0.00268,
        0.00354,
        _bartowski("Meta-Llama-3.1-70B-Instruct"),
    ),
    CatalogModel(
        "Meta-Llama-3.1-405B",
        CONTEXT_128K,
        TEXT,
        False,
        MANAGED_ONLY,
        False,
        None,
        None,
        _bartowski("Meta-Llama-3.1-405B"),
    ),
    CatalogModel(
        "Meta-Llama-3.1-405B-Instruct",
        CONTEXT_128K,
        TEXT,
        True,
        BOTH,
        False,
        0.00533,
        0.016,
        _bartowski("Meta-Llama-3.1-405B-Instruct"),
    ),
)


class UnknownModelError(ValueError):
    """A model name that is not in the catalog."""


def find_model(name: str) -> CatalogModel:
    """The catalog entry named `name` (case-insensitive, as Azure routes model names).

    Raises:
        UnknownModelError: with a sentence listing the catalog's names.
    """
    for model in CATALOG:
        if model.name.lower() == name.lower():
            return model
    names = ", ".join(m.name for m in CATALOG)
    raise UnknownModelError(f"Model '{name}' is not in the catalog. Choose one of: {names}.")


@dataclass(frozen=True)
class InstanceType:
    """A managed-compute instance size: how many CPU threads one replica's engine uses, and its price."""

    name: str
    num_cores: int
    price_per_core_hour: float


# Azure general-purpose VM sizes; the price is per vCPU-hour, pay-as-you-go, for cost estimates only.
INSTANCE_TYPES: tuple[InstanceType, ...] = (
    InstanceType("Standard_D2as_v4", 2, 0.048),
    InstanceType("Standard_D4as_v4", 4, 0.048),
    InstanceType("Standard_D8as_v4", 8, 0.048),
    InstanceType("Standard_D16as_v4", 16, 0.048),
    InstanceType("Standard_D32as_v4", 32, 0.048),
)
DEFAULT_INSTANCE_TYPE = "Standard_D2as_v4"


def find_instance_type(name: str) -> InstanceType:
    for instance_type in INSTANCE_TYPES:
        if instance_type.name.lower() == name.lower():
            return instance_type
    names = ", ".join(t.name for t in INSTANCE_TYPES)
    raise ValueError(f"Instance type '{name}' is not known. Choose one of: {names}.")
