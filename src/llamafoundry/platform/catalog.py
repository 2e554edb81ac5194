"""The model catalog: the Meta Llama family as Azure AI Foundry lists it, and the instance types of managed compute.

Prices are Azure's published pay-as-you-go prices for serverless Llama deployments (USD per 1,000 tokens) at the
time of writing; they are defaults, for cost estimates only, and a deployment can override them. Models that
Azure offers on managed compute only have no per-token price: they are billed by core-hours.

Weights: llama.cpp serves GGUF files, so each entry names a community GGUF conversion on Hugging Face that
`llamafoundry deploy create` downloads when no `--weights` file is given (see `platform.weights`). Its SHA-256 is
pinned where a maintained catalog records it (LocalAI's model gallery, whose downloads verify it); elsewhere the
hub's own LFS checksum is checked. Llama 3.2 Vision and Llama Guard 3 11B Vision have no llama.cpp support: those
entries have no download and are deployed with `--upstream`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
        weights: the GGUF to download, or None when llama.cpp cannot run the model (deploy it with --upstream);
            for a model that takes images, llama.cpp here serves its text (images need an --upstream deployment).
        description, intended_use, languages, license_name, license_url: the model card, as Azure's catalog shows
            it.
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
    description: str = ""
    intended_use: str = ""
    languages: tuple[str, ...] = ()
    license_name: str = ""
    license_url: str = ""
    provider: str = "Meta"
    output_modalities: tuple[str, ...] = ("text",)

    @property
    def accepts_images(self) -> bool:
        return "image" in self.input_modalities

    def allows(self, deployment_type: str) -> bool:
        return deployment_type in self.deployment_types


TEXT = ("text",)
TEXT_IMAGE = ("text", "image")
LLAMA3_LANGUAGES = ("English", "German", "French", "Italian", "Portuguese", "Hindi", "Spanish", "Thai")
LLAMA4_LANGUAGES = ("Arabic", "English", "French", "German", "Hindi", "Indonesian", "Italian", "Portuguese",
                    "Spanish", "Tagalog", "Thai", "Vietnamese")  # fmt: skip
LICENSE_URL = "https://github.com/meta-llama/llama-models/blob/main/models/{}/LICENSE"


def _bartowski(name: str) -> WeightsSource:
    return WeightsSource(f"bartowski/{name}-GGUF", f"{name}-Q4_K_M.gguf")


def _bartowski_split(name: str) -> WeightsSource:
    """A quantization too large for one hub file: bartowski publishes its parts in a folder named after it."""
    return WeightsSource(f"bartowski/{name}-GGUF", f"{name}-Q4_K_M/")


def _card(
    family: str, description: str, intended_use: str, languages: tuple[str, ...] = LLAMA3_LANGUAGES
) -> dict[str, Any]:
    """The card fields shared by a family's entries: licence name and URL, languages, description, intended use."""
    folder = {"3.1": "llama3_1", "3.2": "llama3_2", "3.3": "llama3_3", "4": "llama4"}[family]
    return {"description": description, "intended_use": intended_use, "languages": languages,
            "license_name": f"Llama {family} Community License", "license_url": LICENSE_URL.format(folder)}  # fmt: skip


_3_2_TEXT = (
    "Lightweight multilingual text models (1B and 3B parameters) pretrained and instruction-tuned by Meta, "
    "for devices and edge deployments: dialogue, agentic retrieval, summarization and rewriting."
)
_3_1 = (
    "Meta's multilingual Llama 3.1 text models (8B, 70B, 405B parameters) with a 128K-token context, trained on "
    "over 15 trillion tokens; the Instruct versions are tuned for dialogue and tool calling."
)
_GUARD = (
    "Llama Guard 3 classifies prompts and responses as safe or unsafe against the MLCommons hazard taxonomy "
    "(S1-S14) and names the categories it finds."
)
_VISION = (
    "Multimodal Llama 3.2 models (11B and 90B parameters) that reason over images and text: visual recognition, "
    "captioning, document and chart question answering."
)
_LLAMA4 = (
    "Natively multimodal Llama 4 mixture-of-experts models (17B active parameters) trained on text, images and "
    "video, for assistant chat, reasoning, coding and image understanding in twelve languages."
)
_CHAT_USE = "Commercial and research use in the listed languages: assistant-like chat and agentic applications."
_BASE_USE = "Commercial and research use: adapting to natural-language generation tasks by fine-tuning."

CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel("Llama-3.2-1B", CONTEXT_128K, TEXT, False, MANAGED_ONLY, True, None, None,
                 _bartowski("Llama-3.2-1B"), **_card("3.2", _3_2_TEXT, _BASE_USE)),
    CatalogModel("Llama-3.2-1B-Instruct", CONTEXT_128K, TEXT, True, MANAGED_ONLY, True, None, None,
                 WeightsSource("hugging-quants/Llama-3.2-1B-Instruct-Q4_K_M-GGUF", "llama-3.2-1b-instruct-q4_k_m.gguf",
                               "1d0e9419ec4e12aef73ccf4ffd122703e94c48344a96bc7c5f0f2772c2152ce3"),
                 **_card("3.2", _3_2_TEXT, _CHAT_USE)),
    CatalogModel("Llama-3.2-3B", CONTEXT_128K, TEXT, False, MANAGED_ONLY, True, None, None,
                 _bartowski("Llama-3.2-3B"), **_card("3.2", _3_2_TEXT, _BASE_USE)),
    CatalogModel("Llama-3.2-3B-Instruct", CONTEXT_128K, TEXT, True, MANAGED_ONLY, True, None, None,
                 WeightsSource("hugging-quants/Llama-3.2-3B-Instruct-Q4_K_M-GGUF", "llama-3.2-3b-instruct-q4_k_m.gguf",
                               "c55a83bfb6396799337853ca69918a0b9bbb2917621078c34570bc17d20fd7a1"),
                 **_card("3.2", _3_2_TEXT, _CHAT_USE)),
    CatalogModel("Llama-Guard-3-1B", CONTEXT_128K, TEXT, False, MANAGED_ONLY, True, None, None,
                 WeightsSource("QuantFactory/Llama-Guard-3-1B-GGUF", "Llama-Guard-3-1B.Q4_K_M.gguf"),
                 **_card("3.2", _GUARD, "Filtering the inputs and outputs of LLM applications (a guard model).")),
    CatalogModel("Llama-Guard-3-11B-Vision", CONTEXT_128K, TEXT_IMAGE, False, MANAGED_ONLY, True, None, None, None,
                 **_card("3.2", _GUARD + " This version also reads images.",
                         "Filtering image and text prompts and text responses.", ("English",))),
    CatalogModel("Llama-3.2-11B-Vision-Instruct", CONTEXT_128K, TEXT_IMAGE, False, BOTH, True, 0.00037, 0.00037, None,
                 **_card("3.2", _VISION, _CHAT_USE + " Image tasks in English only.")),
    CatalogModel("Llama-3.2-90B-Vision-Instruct", CONTEXT_128K, TEXT_IMAGE, False, BOTH, True, 0.00204, 0.00204, None,
                 **_card("3.2", _VISION, _CHAT_USE + " Image tasks in English only.")),
    CatalogModel("Meta-Llama-3.1-8B", CONTEXT_128K, TEXT, False, MANAGED_ONLY, False, None, None,
                 _bartowski("Meta-Llama-3.1-8B"), **_card("3.1", _3_1, _BASE_USE)),
    CatalogModel("Meta-Llama-3.1-8B-Instruct", CONTEXT_128K, TEXT, True, BOTH, False, 0.0003, 0.00061,
                 WeightsSource("MaziyarPanahi/Meta-Llama-3.1-8B-Instruct-GGUF",
                               "Meta-Llama-3.1-8B-Instruct.Q4_K_M.gguf",
                               "c2f17f44af962660d1ad4cb1af91a731f219f3b326c2b14441f9df1f347f2815"),
                 **_card("3.1", _3_1, _CHAT_USE)),
    CatalogModel("Meta-Llama-3.1-70B", CONTEXT_128K, TEXT, False, MANAGED_ONLY, False, None, None,
                 _bartowski("Meta-Llama-3.1-70B"), **_card("3.1", _3_1, _BASE_USE)),
    CatalogModel("Meta-Llama-3.1-70B-Instruct", CONTEXT_128K, TEXT, True, BOTH, False, 0.00268, 0.00354,
                 WeightsSource("MaziyarPanahi/Meta-Llama-3.1-70B-Instruct-GGUF",
                               "Meta-Llama-3.1-70B-Instruct.Q4_K_M.gguf",
                               "3f16ab17da4521fe3ed7c5d7beed960d3fe7b5b64421ee9650aa53d6b649ccab"),
                 **_card("3.1", _3_1, _CHAT_USE)),
    CatalogModel("Meta-Llama-3.1-405B", CONTEXT_128K, TEXT, False, MANAGED_ONLY, False, None, None,
                 _bartowski_split("Meta-Llama-3.1-405B"), **_card("3.1", _3_1, _BASE_USE)),
    CatalogModel("Meta-Llama-3.1-405B-Instruct", CONTEXT_128K, TEXT, True, BOTH, False, 0.00533, 0.016,
                 _bartowski_split("Meta-Llama-3.1-405B-Instruct"), **_card("3.1", _3_1, _CHAT_USE)),
    CatalogModel("Llama-3.3-70B-Instruct", CONTEXT_128K, TEXT, True, BOTH, False, 0.00071, 0.00071,
                 WeightsSource("MaziyarPanahi/Llama-3.3-70B-Instruct-GGUF", "Llama-3.3-70B-Instruct.Q4_K_M.gguf",
                               "4f3b04ecae278bdb0fd545b47c210bc5edf823e5ebf7d41e0b526c81d54b1ff3"),
                 **_card("3.3", "Meta's Llama 3.3 70B instruction-tuned text model: Llama 3.1 405B-class quality "
                         "on text tasks at 70B parameters, with a 128K-token context and tool calling.", _CHAT_USE)),
    # Llama 4 takes images; llama.cpp here serves its text. Scout's default download is Q3_K_S (one ~48 GB file whose
    # checksum is pinned); its Q4_K_M is split in parts (pass --weights for it).
    CatalogModel("Llama-4-Scout-17B-16E-Instruct", 10_485_760, TEXT_IMAGE, True, BOTH, True, 0.0002, 0.00078,
                 WeightsSource("bartowski/meta-llama_Llama-4-Scout-17B-16E-Instruct-GGUF",
                               "meta-llama_Llama-4-Scout-17B-16E-Instruct-Q3_K_S.gguf",
                               "48dfc18d40691b4190b7fecf1f89b78cadc758c3a27a9e2a1cabd686fdb822e3"),
                 **_card("4", _LLAMA4 + " Scout: 16 experts, 109B parameters in all, a 10M-token context.",
                         _CHAT_USE + " Image understanding in English.", LLAMA4_LANGUAGES)),
    CatalogModel("Llama-4-Maverick-17B-128E-Instruct-FP8", 1_048_576, TEXT_IMAGE, True, BOTH, True, 0.00025, 0.001,
                 WeightsSource("bartowski/meta-llama_Llama-4-Maverick-17B-128E-Instruct-GGUF",
                               "meta-llama_Llama-4-Maverick-17B-128E-Instruct-Q4_K_M/"),
                 **_card("4", _LLAMA4 + " Maverick: 128 experts, 400B parameters in all, a 1M-token context.",
                         _CHAT_USE + " Image understanding in English.", LLAMA4_LANGUAGES)),
)  # fmt: skip


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
