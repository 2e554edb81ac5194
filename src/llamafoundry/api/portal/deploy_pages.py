"""The Deploy form: the project, serverless or managed compute, weights (the catalog's download, a file on the server,
or an upstream server), instances, sizes, limits and content safety. It posts to `POST /management/deployments`, so
every rule and sentence is the CLI's (`platform.deployments`, `platform.sizing`); the form only turns fields into
that body."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llamafoundry.api.portal.client import PortalApiError
from llamafoundry.api.portal.sessions import WRITE_DEPLOYMENTS, Session
from llamafoundry.api.portal.web import PREFIX, Portal, Route, field, form_data, redirect, segment
from llamafoundry.platform import sizing
from llamafoundry.platform.catalog import DEFAULT_INSTANCE_TYPE, INSTANCE_TYPES
from llamafoundry.platform.errors import DeploymentError

INTEGER_FIELDS = {"instances": "--instances", "tpm": "--tpm", "rpm": "--rpm"}
# the sizes (`platform.sizing.FIELDS`) as the form shows them: field -> label
SIZE_LABELS = {"ctx_size": "Context size", "parallel": "Parallel sequences", "threads": "Threads",
               "kv_cache_type": "KV cache type", "flash_attn": "Flash attention", "gpu_layers": "GPU layers",
               "speculative_tokens": "Speculative tokens"}  # fmt: skip
# the option a platform sentence starts with -> the form field it is about
FIELD_OF_OPTION = {"--instances": "instances", "--instance-type": "instance_type", "--shared-quota": "shared_quota",
                   "--weights": "weights", "--upstream": "upstream", "--tpm": "tpm", "--rpm": "rpm",
                   "--project": "project", **{"--" + f.replace("_", "-"): f for f in SIZE_LABELS}}  # fmt: skip
FIELD_OF_PHRASE = (("valid deployment name", "name"), ("A deployment named", "name"), ("not in the catalog", "model"),
                   ("cannot be deployed as", "type"), ("Deployment type", "type"), ("Project '", "project"),
                   ("already holds the serverless deployment", "type"), ("GGUF", "weights"),
                   *((f, f) for f in SIZE_LABELS))  # fmt: skip


class FormError(Exception):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def deployment_body(form: dict[str, list[str]]) -> dict[str, Any]:
    """The management API's create body from the form's fields (blank fields are left out: the platform's
    defaults apply)."""
    body: dict[str, Any] = {"name": field(form, "name"), "model": field(form, "model"),
                            "type": field(form, "type") or "serverless"}  # fmt: skip
    source = field(form, "source") or "catalog"
    if source == "file":
        if not field(form, "weights"):
            raise FormError("weights", "Give the path of a GGUF file on the server, or choose another weights source.")
        body["weights"] = field(form, "weights")
    elif source == "upstream":
        if not field(form, "upstream"):
            raise FormError("upstream", "Give the base URL of an OpenAI-compatible server, such as "
                            "http://10.0.0.5:8000/v1, or choose another weights source.")  # fmt: skip
        urls = [url.strip() for url in field(form, "upstream").split(",") if url.strip()]
        body["upstream"] = urls if len(urls) > 1 else field(form, "upstream")  # several: a pool
        for name in ("upstream_model", "upstream_key"):
            if field(form, name):
                body[name] = field(form, name)
    for name, option in INTEGER_FIELDS.items():
        text = field(form, name)
        if text:
            try:
                body[name] = int(text)
            except ValueError:
                raise FormError(name, f"{option} {text!r}: give a whole number.") from None
    if field(form, "instance_type"):
        body["instance_type"] = field(form, "instance_type")
    if field(form, "shared_quota"):
        body["shared_quota"] = True
    if field(form, "content_safety") in ("on", "off"):
        body["content_safety"] = field(form, "content_safety") == "on"
    if field(form, "project"):
        body["project"] = field(form, "project")
    return {**body, **size_fields(form)}


def size_fields(form: dict[str, list[str]]) -> dict[str, Any]:
    """The sizes given (blank: the default), whole numbers where the platform takes them. A number the form cannot
    read is refused with the platform's sentence (`sizing.sizing_changes`, as the CLI and the API say it); values
    are checked by the API."""
    sizes: dict[str, Any] = {}
    for name, (kind, *_) in sizing.FIELDS.items():
        text = field(form, name)
        if not text:
            continue
        try:
            sizes[name] = int(text) if kind is int else text
        except ValueError:
            try:
                sizing.sizing_changes({name: text})
            except DeploymentError as exc:
                raise FormError(name, exc.message) from None
    return sizes


def size_choices() -> list[dict[str, Any]]:
    """The size fields as the forms show them: name, label, what it means, bounds or choices."""
    return [{"name": name, "label": SIZE_LABELS[name], "meaning": meaning, "min": lowest, "max": highest,
             "choices": sizing.CHOICES.get(name, ()) if kind is str else None}
            for name, (kind, lowest, highest, meaning) in sizing.FIELDS.items()]  # fmt: skip


def error_field(exc: PortalApiError | FormError) -> str | None:
    """The form field a refusal is about: the API's `param`, else the first option or phrase its sentence names."""
    if exc.param:
        return exc.param
    for word in re.findall(r"--[a-z-]+", exc.message):
        if word in FIELD_OF_OPTION:
            return FIELD_OF_OPTION[word]
    return next((name for phrase, name in FIELD_OF_PHRASE if phrase in exc.message), None)


def deploy_routes(portal: Portal) -> list[Route]:
    async def form_page(request: Request, session: Session, values: dict[str, str] | None = None,
                        error: PortalApiError | FormError | None = None, status: int = 200) -> Response:  # fmt: skip
        async with portal.api(request, session) as api:
            models = (await api.get("/management/models"))["data"]
            projects = [p["name"] for p in (await api.get("/management/projects"))["data"]]
        chosen = values or {"model": request.query_params.get("model", ""), "source": "catalog",
                            "project": request.query_params.get("project", "")}  # fmt: skip
        model = next((m for m in models if m["name"].lower() == chosen.get("model", "").lower()), None)
        if values is None and model is not None:
            chosen["type"] = model["deployment_types"][0]
            chosen["source"] = "catalog" if model["weights"] else "upstream"
        return portal.render(request, "deploy.html", session, status, models=models, model=model, values=chosen,
                             projects=projects, instance_types=INSTANCE_TYPES, sizes=size_choices(),
                             default_instance_type=DEFAULT_INSTANCE_TYPE,
                             error=error.message if error else None,
                             error_field=error_field(error) if error else None)  # fmt: skip

    async def show_form(request: Request, session: Session) -> Response:
        return await form_page(request, session)

    async def create(request: Request, session: Session) -> Response:
        form = await form_data(request)
        values = {name: field(form, name) for name in form}
        try:
            body = deployment_body(form)
            async with portal.api(request, session) as api:
                created = await api.post("/management/deployments", body)
        except (FormError, PortalApiError) as exc:
            if isinstance(exc, PortalApiError) and exc.status >= 500:
                raise
            return await form_page(request, session, values, exc, 400 if isinstance(exc, FormError) else exc.status)
        name = created["name"]
        session.forget_deployment(name)  # a re-created deployment has new keys
        session.remember_key(name, "primary", created["primary_key"])
        session.remember_key(name, "secondary", created["secondary_key"])
        session.flash(f"Deployment {name} was created. Its keys are stored hashed: this portal session can copy them "
                      "(and the playground use them) until you sign out; copy them now to keep them.")  # fmt: skip
        return redirect(f"{PREFIX}/deployments/{segment(name)}")

    return [
        (f"{PREFIX}/deploy", portal.page(show_form, WRITE_DEPLOYMENTS), ["GET"]),
        # no permission check of its own: the API refuses a project key with its sentence, shown on the form
        (f"{PREFIX}/deploy", portal.page(create, csrf=True), ["POST"]),
    ]
