"""Deployments: the list, a deployment's page (Details with its live status, what its replicas run with and its keys,
Consume with code samples, Settings with sizes and instances, rate limits, content safety and blocklists),
regenerating keys and deleting, all through `/management/deployments/...`.

The changes have no permission check of their own (beside the CSRF check): the management API refuses a project
key's with its sentence, which the page shows. The pages hide the controls a principal cannot use."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llamafoundry.api.portal.client import ApiClient, PortalApiError
from llamafoundry.api.portal.deploy_pages import size_choices
from llamafoundry.api.portal.sessions import READ_DEPLOYMENTS, Session
from llamafoundry.api.portal.settings_forms import (
    SettingsError,
    blocklist_body,
    content_safety_body,
    limits_body,
    size_body,
)
from llamafoundry.api.portal.views import limits_view, sample_context, status_view
from llamafoundry.api.portal.web import PREFIX, Portal, Route, field, form_data, redirect, segment
from llamafoundry.platform.content_safety import is_guard_model
from llamafoundry.safety.base import CATEGORIES

TABS = (("details", "Details"), ("consume", "Consume"), ("settings", "Settings"))


def deployment_routes(portal: Portal) -> list[Route]:
    base = f"{PREFIX}/deployments"

    async def listing(request: Request, session: Session) -> Response:
        async with portal.api(request, session) as api:
            found = (await api.get("/management/deployments"))["data"]
        rows = [{**d, "view": status_view(d.get("status"), d)} for d in found]
        return portal.render(request, "deployments.html", session, deployments=rows)

    async def page(request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        tab = request.query_params.get("tab", "details")
        tab = tab if tab in dict(TABS) else "details"
        async with portal.api(request, session) as api:
            deployment = await api.get(f"/management/deployments/{segment(name)}")
            extra = await _tab_data(api, tab, deployment)
        context = sample_context(str(request.base_url), deployment["name"], deployment["model"])
        samples = {key: portal.templates.get_template(f"samples/{key}.txt").render(**context)
                   for key, *_ in context["languages"]}  # fmt: skip
        return portal.render(request, "deployment.html", session, deployment=deployment, tab=tab, tabs=TABS,
                             view=status_view(deployment.get("status"), deployment), known_keys=session.known_keys(
                                 deployment["name"]), samples=samples, limits=limits_view(deployment),
                             categories=[c.value for c in CATEGORIES], **context, **extra)  # fmt: skip

    async def status(request: Request, session: Session) -> Response:
        async with portal.api(request, session) as api:
            deployment = await api.get(f"/management/deployments/{segment(request.path_params['name'])}")
        return portal.fragment("_status.html", deployment=deployment, prefix=PREFIX, csrf_token=session.csrf_token,
                               view=status_view(deployment.get("status"), deployment))  # fmt: skip

    async def download(request: Request, session: Session) -> Response:
        """Cancel a deployment's weight download (its bytes are kept), or resume it."""
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ("cancel", "resume"):
            return portal.error_page(request, session, 404, "Not found", "Downloads are cancelled or resumed.")
        try:
            async with portal.api(request, session) as api:
                await api.post(f"/management/deployments/{segment(name)}/{action}-download", {})
        except PortalApiError as exc:
            if exc.status == 404 or exc.status >= 500:
                raise
            session.flash(exc.message, "error")
        else:
            session.flash("The download was cancelled; the bytes downloaded are kept: Resume download continues it."
                          if action == "cancel" else "The download resumes from the bytes it has.")  # fmt: skip
        return redirect(f"{base}/{segment(name)}")

    async def regenerate(request: Request, session: Session) -> Response:
        name, slot = request.path_params["name"], request.path_params["slot"]
        async with portal.api(request, session) as api:
            answer = await api.post(f"/management/deployments/{segment(name)}/keys/regenerate", {"keyType": slot})
        session.remember_key(answer["name"], answer["keyType"], answer["key"])
        other = "secondary" if answer["keyType"] == "primary" else "primary"
        session.flash(f"The {answer['keyType']} key of {answer['name']} was regenerated: the old one stopped working; "
                      f"the {other} key still works. Copy the new key now.")  # fmt: skip
        return redirect(f"{base}/{segment(answer['name'])}")

    async def delete(request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        async with portal.api(request, session) as api:
            answer = await api.delete(f"/management/deployments/{segment(name)}")
        session.forget_deployment(answer["name"])
        session.flash(f"Deployment {answer['name']} was deleted; its endpoint no longer answers.")
        return redirect(base)

    async def update(request: Request, session: Session) -> Response:
        """One Settings form: rate limits, content safety, a blocklist to save or one to delete."""
        name, what = request.path_params["name"], request.path_params["what"]
        form = await form_data(request)
        path = f"/management/deployments/{segment(name)}"
        try:
            async with portal.api(request, session) as api:
                await _update(api, path, what, form)
        except SettingsError as exc:
            session.flash(str(exc), "error")
        except PortalApiError as exc:
            if exc.status == 404 or exc.status >= 500:
                raise  # a page of its own
            session.flash(exc.message, "error")
        else:
            session.flash(_saved_sentence(what, form))
        return redirect(f"{base}/{segment(name)}?tab=settings")

    return [
        (base, portal.page(listing, READ_DEPLOYMENTS), ["GET"]),
        (f"{base}/{{name}}", portal.page(page, READ_DEPLOYMENTS), ["GET"]),
        (f"{base}/{{name}}/status", portal.page(status, READ_DEPLOYMENTS), ["GET"]),
        (f"{base}/{{name}}/keys/{{slot}}/regenerate", portal.page(regenerate, csrf=True), ["POST"]),
        (f"{base}/{{name}}/delete", portal.page(delete, csrf=True), ["POST"]),
        (f"{base}/{{name}}/download/{{action}}", portal.page(download, csrf=True), ["POST"]),
        (f"{base}/{{name}}/settings/{{what}}", portal.page(update, csrf=True), ["POST"]),
    ]


async def _tab_data(api: ApiClient, tab: str, deployment: dict[str, Any]) -> dict[str, Any]:
    if tab != "settings":
        return {}
    path = f"/management/deployments/{segment(deployment['name'])}"
    safety = await api.get(f"{path}/content-safety")
    blocklists = (await api.get(f"{path}/blocklists"))["data"]
    others = (await api.get("/management/deployments"))["data"]
    guards = [d["name"] for d in others if is_guard_model(d["model"]) and d["name"] != deployment["name"]]
    return {"safety": safety["policy"], "blocklists": blocklists, "guards": guards, "sizes": size_choices()}


async def _update(api: ApiClient, path: str, what: str, form: dict[str, list[str]]) -> None:
    if what == "size":
        await api.patch(path, size_body(form, await api.get(path)))
    elif what == "limits":
        await api.patch(path, limits_body(form))
    elif what == "content-safety":
        await api.patch(f"{path}/content-safety", content_safety_body(form))
    elif what == "blocklist":
        list_id, body = blocklist_body(form)
        await api.put(f"{path}/blocklists/{segment(list_id)}", body)
    elif what == "delete-blocklist":
        await api.delete(f"{path}/blocklists/{segment(field(form, 'id'))}")
    else:
        raise PortalApiError(404, f"There is no setting '{what}' to change.")


def _saved_sentence(what: str, form: dict[str, list[str]]) -> str:
    return {
        "size": "Sizes saved: new replicas start within a second or two, and the current ones answer until they are "
                "ready.",
        "limits": "Rate limits saved; the server applies them within a second or two.",
        "content-safety": "Content safety saved; it applies to the next request after the server's store poll.",
        "blocklist": f"Blocklist {field(form, 'id')} saved.",
        "delete-blocklist": f"Blocklist {field(form, 'id')} deleted.",
    }[what]
