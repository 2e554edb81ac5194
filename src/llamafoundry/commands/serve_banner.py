"""What `serve` prints when it starts: the model and its context, the addresses to call, the key, a snippet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llamafoundry.commands.common import console
from llamafoundry.commands.serve_platform import API_KEY_ENV, Tls
from llamafoundry.config import ServeSettings
from llamafoundry.settings import Origin

if TYPE_CHECKING:
    from fastapi import FastAPI

# The addresses the banner lists: (label, path under the server's URL, a path the app must serve for the line to be
# printed: the path itself when None). A page's line thus appears together with its route (/docs with the OpenAPI
# routes). A new page adds its line here.
LINKS: list[tuple[str, str, str | None]] = [
    ("Azure AI Inference endpoint", "", None),
    ("OpenAI base_url", "/v1", "/v1/models"),
    ("API reference (OpenAPI)", "/docs", None),
    ("Prometheus metrics", "/metrics", None),
    ("Portal (sign in with the admin key)", "/portal", None),
]


@dataclass(frozen=True)
class Banner:
    """What the banner describes. `key_origin`: where the API key came from (a key from the environment or a
    file is not printed: the one who set it has it, and this output may go to a log others read)."""

    settings: ServeSettings
    key_origin: Origin
    tls: Tls
    app: FastAPI
    has_model: bool

    @property
    def url(self) -> str:
        return f"{self.tls.scheme}://{self.settings.host}:{self.settings.port}"


def print_banner(banner: Banner) -> None:
    settings = banner.settings
    if banner.has_model:
        console.print(f"[bold]llamafoundry[/bold] serving [cyan]{settings.model_name}[/cyan] at {banner.url}",
                      highlight=False)  # fmt: skip
        console.print(f"Context: {settings.engine.ctx_size:,} tokens per request (prompt + completion), "
                      f"{settings.engine.parallel} requests decoded together", soft_wrap=True,
                      highlight=False)  # fmt: skip
    width = max(len(label) for label, _, _ in LINKS) + 1
    for label, path, probe in LINKS:
        if serves(banner.app, path if probe is None else probe):
            console.print(f"  {label + ':':<{width}} {banner.url}{path}", soft_wrap=True, highlight=False)
    _print_tls(banner.tls)
    if banner.has_model:
        _print_key_and_snippet(banner)


def serves(app: FastAPI, path: str) -> bool:
    """Whether a GET of `path` reaches a route of `app` ("" is the server's root, always served)."""
    from starlette.routing import Match

    if not path:
        return True
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": [], "query_string": b""}
    return any(route.matches(scope)[0] != Match.NONE for route in app.routes)


def _print_tls(tls: Tls) -> None:
    if tls.local is None:
        return
    console.print(f"HTTPS with a certificate from this data directory's local CA ({tls.local.ca_cert}) for "
                  f"{', '.join(tls.local.names)}. Trust the CA once:", soft_wrap=True, highlight=False)  # fmt: skip
    for line in tls.local.trust_instructions():
        console.print(f"  {line}", soft_wrap=True, highlight=False)


def _print_key_and_snippet(banner: Banner) -> None:
    key, origin = banner.settings.api_key, banner.key_origin
    if origin.kind == "env":
        console.print(f"API key: the value of ${API_KEY_ENV}", soft_wrap=True)
        credential = f'os.environ["{API_KEY_ENV}"]'
    elif origin.kind == "file":
        console.print(f"API key: api_key in {origin.where}", soft_wrap=True, highlight=False)
        credential = '"<the api_key of the config file>"'
    else:
        note = " (generated; pass --api-key to choose one)" if origin.kind == "default" else ""
        console.print(f"API key{note}: [green]{key}[/green]", soft_wrap=True)
        credential = f'"{key}"'
    console.print(
        "Try it:\n"
        "  from azure.ai.inference import ChatCompletionsClient\n"
        "  from azure.ai.inference.models import UserMessage\n"
        "  from azure.core.credentials import AzureKeyCredential\n"
        f'  client = ChatCompletionsClient("{banner.url}", AzureKeyCredential({credential}))\n'
        '  print(client.complete(messages=[UserMessage("Hi!")]).choices[0].message.content)',
        highlight=False,
        soft_wrap=True,  # never wrap the snippet: it must stay copy-pasteable
    )
