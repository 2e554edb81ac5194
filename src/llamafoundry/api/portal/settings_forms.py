"""The Settings tab's forms as management API bodies: sizes and instances, rate limits
(`PATCH /management/deployments/{name}`),
content safety (`PATCH .../content-safety`) and blocklists (`PUT .../blocklists/{id}`). The API checks the values
with the CLI's rules; these functions only read fields."""

from __future__ import annotations

from typing import Any

from llamafoundry.api.portal.deploy_pages import FormError, size_fields
from llamafoundry.api.portal.web import field

REGEX_PREFIX = "re:"  # as in `serve --content-safety-blocklist FILE`: one term a line, 're:' before a regex


class SettingsError(ValueError):
    """A field the form itself cannot read (the sentence is shown on the page)."""


def size_body(form: dict[str, list[str]], deployment: dict[str, Any]) -> dict[str, Any]:
    """The sizes and managed instances that differ from the deployment's (blank: left as they are), as the API takes
    them; a number the form cannot read is refused with the platform's sentence."""
    try:
        given = size_fields(form)
        instances = _whole(form, "instances", "--instances")
    except FormError as exc:
        raise SettingsError(exc.message) from None
    settings = deployment.get("settings") or {}
    body = {name: value for name, value in given.items() if settings.get(name) != value}
    if instances is not None and instances != deployment.get("instances"):
        body["instances"] = instances
    if not body:
        raise SettingsError("Nothing to change: give a size or a number of instances other than the current ones.")
    return body


def _whole(form: dict[str, list[str]], name: str, option: str) -> int | None:
    text = field(form, name)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{option} {text!r}: give a whole number.") from None


def limits_body(form: dict[str, list[str]]) -> dict[str, Any]:
    """`tpm` and `rpm` as given (blank: left as they are; 0: not limited)."""
    body: dict[str, Any] = {}
    for name in ("tpm", "rpm"):
        text = field(form, name)
        if text:
            try:
                body[name] = int(text)
            except ValueError:
                raise SettingsError(f"--{name} {text!r}: give a whole number, or 0 for no limit.") from None
    if not body:
        raise SettingsError("Nothing to change: give tokens or requests per minute.")
    return body


def content_safety_body(form: dict[str, list[str]]) -> dict[str, Any]:
    """The whole policy the form shows (checkboxes that are not ticked are off)."""
    return {
        "enabled": bool(field(form, "enabled")),
        "threshold": field(form, "threshold") or "medium",
        "categories": [c for c in form.get("categories", []) if c],
        "jailbreak": bool(field(form, "jailbreak")),
        "indirect_attack": bool(field(form, "indirect_attack")),
        "streaming": field(form, "streaming") or "default",
        "guard": field(form, "guard") or None,
    }


def blocklist_body(form: dict[str, list[str]]) -> tuple[str, dict[str, Any]]:
    """(list id, body): items one a line, `re:` before a regular expression."""
    list_id = field(form, "id")
    if not list_id:
        raise SettingsError("Give the blocklist a name (its id is reported in content-filter annotations).")
    items: list[Any] = []
    for line in (form.get("items") or [""])[-1].splitlines():
        text = line.strip()
        if text.startswith(REGEX_PREFIX):
            items.append({"pattern": text[len(REGEX_PREFIX) :].strip(), "is_regex": True})
        elif text:
            items.append(text)
    return list_id, {"items": items, "description": field(form, "description")}

