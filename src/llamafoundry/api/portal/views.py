"""What the deployment pages show, computed from the management API's answers: the status a deployment is in,
its effective rate limits, and the Consume tab's code samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llamafoundry.platform.ratelimit import UNLIMITED, deployment_limits
from llamafoundry.platform.sizing import FIELDS as SIZE_FIELDS

# known states -> (label, sentence); any other state the API reports is shown as it is
STATES = {
    "pending": ("Pending", "Saved; the server picks it up within a second or two."),
    "downloading": ("Downloading", "Downloading the weights."),
    "starting": ("Loading", "Starting its replicas and loading the weights."),
    "loading": ("Loading", "Loading the weights."),
    "ready": ("Ready", "Serving requests."),
    "failed": ("Failed", "It does not serve requests."),
    "not served": ("Not served", "This server does not serve it."),
    "changing": ("Changing", "Saved; the server starts replicas with the new sizes within a second or two."),
    "cancelled": ("Cancelled", "The download was cancelled; the bytes downloaded are kept for a resume."),
}
TERMINAL_STATES = ("ready", "failed", "not served", "cancelled")
SAMPLE_LANGUAGES = (
    ("python", "Python", "azure-ai-inference", "pip install azure-ai-inference"),
    ("javascript", "JavaScript", "@azure-rest/ai-inference", "npm install @azure-rest/ai-inference @azure/core-auth "
     "@azure/core-sse"),
    ("csharp", "C#", "Azure.AI.Inference", "dotnet add package Azure.AI.Inference --prerelease"),
    ("curl", "curl", "REST", ""),
    ("openai", "OpenAI SDK", "openai (Python)", "pip install openai"),
    ("langchain", "LangChain", "langchain-azure-ai", "pip install langchain-azure-ai"),
)  # fmt: skip


@dataclass(frozen=True)
class StatusView:
    state: str
    label: str
    sentence: str
    error: str | None
    percent: float | None  # download progress, when the status carries it
    replicas: list[dict[str, Any]]
    is_terminal: bool
    sizing: dict[str, Any] | None = None  # what the replicas run with (`status.sizing`)
    progress_text: str | None = None  # "12.3 of 24.4 MB (50.4%), 3.1 MB/s, about 4 s left"
    is_download: bool = False  # the status is a weight download's (it can be cancelled or resumed)


def status_view(status: dict[str, Any] | None, deployment: dict[str, Any] | None = None) -> StatusView:
    """How to show the `status` of `GET /management/deployments/{name}`, whatever state it carries.

    A deployment whose new replicas are starting beside the current ones (`status.changing`), or whose stored sizes
    or instances the running replicas do not have yet (saved, not picked up), is "changing" until the new ones are
    ready: the page keeps polling."""
    status = status or {"state": "unknown"}
    state = str(status.get("state", "unknown"))
    label, sentence = STATES.get(state, (state.capitalize(), ""))
    if state != "failed" and (status.get("changing") or is_pending_change(deployment, status)):
        state, (label, sentence) = "changing", STATES["changing"]
        if status.get("changing"):
            sentence = f"New replicas are starting: {status['changing']}."
    error = status.get("error") or status.get("reason") or status.get("key_refused")
    sizing = status.get("sizing")
    if state == "downloading" and isinstance(status.get("queued"), str):
        sentence = f"Queued: {status['queued']}."
    return StatusView(state, label, sentence, str(error) if error else None, _percent(status.get("progress")),
                      list(status.get("replicas") or []), state in TERMINAL_STATES,
                      dict(sizing) if isinstance(sizing, dict) else None, _progress_text(status.get("progress")),
                      "source" in status)  # fmt: skip


def _progress_text(progress: Any) -> str | None:
    """A download's progress as a sentence: bytes, percent, rate and time left (what the API reports of them)."""
    if not isinstance(progress, dict) or not isinstance(progress.get("downloaded_bytes"), int):
        return None
    done, total = progress["downloaded_bytes"], progress.get("total_bytes")
    text = f"{done / 1e6:,.1f} MB" + (f" of {total / 1e6:,.1f} MB ({progress.get('percent')}%)" if total else "")
    if progress.get("rate_bytes_per_s"):
        text += f", {progress['rate_bytes_per_s'] / 1e6:,.1f} MB/s"
        if progress.get("eta_s") is not None:
            text += f", about {progress['eta_s']} s left"
    return text


def is_pending_change(deployment: dict[str, Any] | None, status: dict[str, Any]) -> bool:
    """Whether the deployment's stored sizes or managed instances differ from what its running replicas report."""
    running = status.get("sizing")
    if deployment is None or not isinstance(running, dict):
        return False
    settings = deployment.get("settings") or {}
    if any(settings.get(f) is not None and settings[f] != running.get(f) for f in SIZE_FIELDS):
        return True
    replicas = status.get("replicas")
    return "instances" in deployment and isinstance(replicas, list) and len(replicas) != deployment["instances"]


def _percent(progress: Any) -> float | None:
    """Progress as a percentage, from a fraction, a percentage, or a mapping of done and total (bytes)."""
    if isinstance(progress, bool) or progress is None:
        return None
    if isinstance(progress, int | float):
        return round(progress * 100 if progress <= 1 else progress, 1)
    if isinstance(progress, dict):
        done = next((progress[k] for k in ("done", "downloaded", "downloaded_bytes", "bytes") if k in progress), None)
        total = next((progress[k] for k in ("total", "total_bytes", "size") if k in progress), None)
        if isinstance(done, int | float) and isinstance(total, int | float) and total > 0:
            return round(100 * done / total, 1)
        return _percent(progress.get("fraction", progress.get("percent")))
    return None


def limits_view(deployment: dict[str, Any]) -> dict[str, str]:
    """The effective limits, as sentences ("not limited" where a limit does not bind)."""
    limits = deployment_limits(deployment["type"], deployment.get("settings") or {})

    def show(value: int | None) -> str:
        return "not limited" if value is None or value >= UNLIMITED else f"{value:,}"

    return {"tpm": show(limits.tokens_per_minute if limits else None),
            "rpm": show(limits.requests_per_minute if limits else None)}  # fmt: skip


def sample_context(base_url: str, name: str, model: str) -> dict[str, Any]:
    """What the sample templates are filled with: the endpoint as the SDKs take it, the chat URL, the model."""
    base = base_url.rstrip("/")
    endpoint = f"{base}/deployments/{name}"
    return {
        "endpoint": endpoint,
        "chat_url": f"{endpoint}/chat/completions?api-version=2024-05-01-preview",
        "openai_base_url": f"{base}/v1",  # OpenAI clients name the deployment in `model`
        "deployment_name": name,
        "model": model,
        "is_http": endpoint.startswith("http://"),
        "languages": SAMPLE_LANGUAGES,
    }
