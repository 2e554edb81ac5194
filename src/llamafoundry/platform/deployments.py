"""Deployments: the rules of creating, listing, deleting them and rotating their keys.

Used by the `deploy` commands (on the store directly, no server needed) and by the management API alike, so
both answer the same way. Errors are `DeploymentError`s whose message is a sentence for the user and whose
`status` is what the management API answers (400, 404, 409).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llamafoundry.platform import keys as keys_mod
from llamafoundry.platform import sizing
from llamafoundry.platform.catalog import (
    DEFAULT_INSTANCE_TYPE,
    DEPLOYMENT_TYPES,
    MANAGED,
    SERVERLESS,
    CatalogModel,
    UnknownModelError,
    WeightsSource,
    find_instance_type,
    find_model,
)
from llamafoundry.platform.downloads import add_job
from llamafoundry.platform.errors import DeploymentConflict, DeploymentError, DeploymentNotFound
from llamafoundry.platform.project_keys import project_key_holder
from llamafoundry.platform.projects import check_project
from llamafoundry.platform.server_keys import server_key_holder
from llamafoundry.platform.store import DEFAULT_PROJECT, Deployment, Store, StoreConflict, iso_time
from llamafoundry.platform.weights import WeightsError, hub_url, resolve_weights

SHARED_QUOTA_LIFETIME_S = 168 * 3600  # Azure deletes shared-quota deployments 168 hours after creation
MAX_INSTANCES = 16
MAX_UPSTREAMS = 16
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")


@dataclass
class DeploymentSpec:
    """What `deploy create` asks for. `weights` and `upstream_url` are exclusive; with neither, the catalog's
    GGUF is downloaded. `upstream_url` is one base URL, several (a pool) in a list or separated by commas."""

    name: str
    model: str
    type: str = SERVERLESS
    weights: Path | None = None
    upstream_url: str | Sequence[str] | None = None
    upstream_model: str | None = None
    upstream_api_key: str | None = None
    instances: int | None = None
    instance_type: str | None = None
    shared_quota: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    project: str = DEFAULT_PROJECT


@dataclass(frozen=True)
class NewKeys:
    """Keys in full: returned only by create and regenerate, never stored."""

    primary: str | None = None
    secondary: str | None = None


def create_deployment(
    store: Store, spec: DeploymentSpec, home: Path, now: float | None = None
) -> tuple[Deployment, NewKeys]:
    """Validate `spec`, store the deployment with two new keys, return both keys. Weights that must be downloaded
    are not waited for: the deployment is stored without them and with a download job (`platform.downloads`), which
    the server that owns the deployments runs (its `weights_path` is set when they are there)."""
    now = time.time() if now is None else now
    name = check_name(spec.name)
    model = _catalog_model(spec.model)
    _check_type(spec, model)
    project = check_project(store, spec.project)
    _check_not_taken(store, name, model, spec.type, project)
    weights_path, upstream, source = None, None, None
    is_managed = spec.type == MANAGED
    instances = (spec.instances or 1) if is_managed else 1
    instance_type = find_instance_type(spec.instance_type or DEFAULT_INSTANCE_TYPE).name if is_managed else None
    if spec.upstream_url:
        upstream = check_upstream_urls(spec.upstream_url)
        _refuse_sizing_of_upstream(spec.settings, name)
    else:
        found, source = _local_weights(model, spec.weights, home)
        if found is not None:
            weights_path = str(found)
            sizing.plan(spec.settings, found, instances, _cores(instance_type))
    deployment = Deployment(
        name=name,
        model=model.name,
        type=spec.type,
        instances=instances,
        created_at=now,
        weights_path=weights_path,
        upstream_url=upstream,
        upstream_model=spec.upstream_model,
        upstream_api_key=spec.upstream_api_key,
        instance_type=instance_type,
        shared_quota=spec.shared_quota,
        expires_at=now + SHARED_QUOTA_LIFETIME_S if spec.shared_quota else None,
        settings=spec.settings,
        project=project,
    )
    primary, secondary = keys_mod.generate_key(), keys_mod.generate_key()
    hashes = {keys_mod.PRIMARY: keys_mod.hash_key(primary), keys_mod.SECONDARY: keys_mod.hash_key(secondary)}
    queue = (lambda conn: add_job(conn, name, source, now)) if source is not None else None
    try:
        store.add_deployment(deployment, hashes, queue)
    except StoreConflict:  # another process won a race since the checks above
        _check_not_taken(store, name, model, spec.type, project)
        raise DeploymentConflict(f"Deployment '{name}' could not be created; it conflicts with another.") from None
    return deployment, NewKeys(primary, secondary)


def _local_weights(model: CatalogModel, weights: Path | None, home: Path) -> tuple[Path | None, WeightsSource | None]:
    """The GGUF to serve, when it is here (`weights`, or the catalog's file downloaded before); else the catalog
    source to download. Raises DeploymentError for a wrong file or a model with nothing to download."""
    if weights is None and model.weights is not None:
        cached = home / "models" / model.weights.hf_repo / model.weights.hf_file
        if not cached.is_file():  # (a split source names a folder or a first part: its job finds every part)
            return None, model.weights
        weights = cached
    try:
        return resolve_weights(model, weights, home), None
    except WeightsError as exc:
        raise DeploymentError(str(exc)) from None


def scale(store: Store, name: str, instances: int) -> Deployment:
    """Change a managed deployment's number of replicas; the new count must fit in the memory free now (a gateway
    starts the new set while the current one answers)."""
    deployment = get_deployment(store, name)
    if deployment.type != MANAGED or deployment.upstream_url:
        raise DeploymentError(
            f"Deployment '{deployment.name}' is {'an --upstream' if deployment.upstream_url else 'a serverless'} "
            "deployment; --instances scales managed deployments of local weights."
        )
    if not 1 <= instances <= MAX_INSTANCES:
        raise DeploymentError(f"--instances must be between 1 and {MAX_INSTANCES}, got {instances}.")
    if deployment.weights_path is not None:  # (still downloading: checked when the weights are there)
        sizing.plan(deployment.settings, Path(deployment.weights_path), instances, _cores(deployment.instance_type))
    return store.set_instances(deployment.name, instances)


def update_settings(store: Store, name: str, changes: dict[str, Any]) -> Deployment:
    """Change a deployment's settings (limits, content safety, sizes; None removes one). New sizes
    (`sizing.FIELDS`) must fit in the memory free now: a gateway starts replicas with them while the current
    ones go on answering, and stops those once the new ones are ready."""
    deployment = get_deployment(store, name)
    resized = any(field in changes for field in sizing.FIELDS)
    if deployment.upstream_url:
        _refuse_sizing_of_upstream(changes, deployment.name)
    elif deployment.weights_path is not None and resized:
        settings = {k: v for k, v in {**deployment.settings, **changes}.items() if v is not None}
        sizing.plan(settings, Path(deployment.weights_path), deployment.instances, _cores(deployment.instance_type))
    return store.update_settings(deployment.name, changes)


def set_upstream(store: Store, name: str, urls: str | Sequence[str]) -> Deployment:
    """Change the servers an `--upstream` deployment forwards to; a gateway starts forwarding to the new pool
    while requests in flight finish on the old one."""
    deployment = get_deployment(store, name)
    if not deployment.upstream_url:
        raise DeploymentError(
            f"Deployment '{deployment.name}' serves local weights; --upstream changes the servers of a deployment "
            "created with --upstream. Create a new deployment to forward to a server."
        )
    return store.set_upstream(deployment.name, check_upstream_urls(urls))


def _refuse_sizing_of_upstream(settings: dict[str, Any], name: str) -> None:
    given = [field for field in sizing.FIELDS if settings.get(field) is not None]
    if given:
        raise DeploymentError(
            f"Deployment '{name}' forwards to an upstream server, which sizes itself; {', '.join(given)} apply "
            "to deployments of local weights (their replicas)."
        )


def _cores(instance_type: str | None) -> int | None:
    return find_instance_type(instance_type).num_cores if instance_type else None


def check_name(name: str) -> str:
    """Deployment names are endpoint path segments: 3-32 lowercase letters, digits and hyphens."""
    lowered = name.lower()
    if not _NAME.match(lowered) or "--" in lowered:
        raise DeploymentError(
            f"'{name}' is not a valid deployment name: use 3 to 32 letters, digits and single hyphens, starting "
            "with a letter and not ending with a hyphen (for example 'llama-chat')."
        )
    return lowered


def check_upstream_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or "," in url or any(c.isspace() for c in url):
        raise DeploymentError(
            f"--upstream {url} is not an http(s) URL. Give the base URL of an OpenAI-compatible server, such as "
            "http://10.0.0.5:8000/v1."
        )
    return url.rstrip("/")


def check_upstream_urls(urls: str | Sequence[str]) -> str:
    """One or several base URLs (a list, or a string separated by commas) as the store keeps them: checked,
    without duplicates, joined by commas (a single URL stays as it was stored before pools)."""
    given = upstream_urls(urls) if isinstance(urls, str) else [u for url in urls for u in upstream_urls(url)]
    checked = list(dict.fromkeys(check_upstream_url(url) for url in given))
    if not checked:
        raise DeploymentError("--upstream needs at least one base URL, such as http://10.0.0.5:8000/v1.")
    if len(checked) > MAX_UPSTREAMS:
        raise DeploymentError(f"--upstream takes at most {MAX_UPSTREAMS} servers, got {len(checked)}.")
    return ",".join(checked)


def upstream_urls(stored: str | None) -> list[str]:
    """The base URLs of a stored (or given) `upstream_url`: one, or several separated by commas."""
    return [url.strip() for url in (stored or "").split(",") if url.strip()]


def _catalog_model(name: str) -> CatalogModel:
    try:
        return find_model(name)
    except UnknownModelError as exc:
        raise DeploymentError(str(exc)) from None


def _check_type(spec: DeploymentSpec, model: CatalogModel) -> None:
    if spec.type not in DEPLOYMENT_TYPES:
        raise DeploymentError(f"Deployment type '{spec.type}' does not exist: use serverless or managed.")
    if not model.allows(spec.type):
        raise DeploymentError(
            f"{model.name} cannot be deployed as {spec.type}; it allows {' and '.join(model.deployment_types)}."
        )
    if spec.weights is not None and spec.upstream_url:
        raise DeploymentError("Give either --weights or --upstream, not both: the model runs in one place.")
    if spec.type == SERVERLESS:
        for option, given in (
            ("--instances", spec.instances is not None),
            ("--instance-type", spec.instance_type is not None),
            ("--shared-quota", spec.shared_quota),
        ):
            if given:
                raise DeploymentError(
                    f"{option} applies to managed compute only; serverless deployments are sized by the platform. "
                    "Use --type managed, or leave the option out."
                )
    if spec.instance_type is not None:
        try:
            find_instance_type(spec.instance_type)
        except ValueError as exc:
            raise DeploymentError(str(exc)) from None
    if spec.instances is not None and not 1 <= spec.instances <= MAX_INSTANCES:
        raise DeploymentError(f"--instances must be between 1 and {MAX_INSTANCES}, got {spec.instances}.")
    if spec.upstream_url and spec.instances not in (None, 1):
        raise DeploymentError(
            "--instances starts replicas of local weights; an --upstream deployment forwards to a server that "
            "is sized on its own. Leave --instances out."
        )


def _check_not_taken(store: Store, name: str, model: CatalogModel, deployment_type: str, project: str) -> None:
    if store.get_deployment(name) is not None:
        raise DeploymentConflict(f"A deployment named '{name}' already exists. Choose another name, or delete it.")
    if deployment_type == SERVERLESS:
        holder = store.find_serverless(model.name, project)
        if holder is not None:
            raise DeploymentConflict(
                f"Deployment '{holder.name}' already holds the serverless deployment of {model.name} in project "
                f"'{project}'; a project has at most one per model. Use '{holder.name}', delete it first, deploy on "
                "managed compute, or deploy into another project (--project)."
            )


def get_deployment(store: Store, name: str) -> Deployment:
    found = store.get_deployment(name.lower())
    if found is None:
        raise DeploymentNotFound(f"Deployment '{name}' not found. `llamafoundry deploy list` shows the deployments.")
    return found


def delete_deployment(store: Store, name: str) -> None:
    if not store.delete_deployment(name.lower()):
        raise DeploymentNotFound(f"Deployment '{name}' not found; nothing was deleted.")


def list_deployments(store: Store, now: float | None = None) -> list[Deployment]:
    """Every deployment, after deleting those whose shared-quota lifetime has ended."""
    store.delete_expired(now)
    return store.list_deployments()


def regenerate_key(store: Store, name: str, slot: str, value: str | None = None) -> str:
    """Replace one key (the other keeps working); returns the new key. `value` imports a chosen key."""
    deployment = get_deployment(store, name)
    try:
        slot = keys_mod.check_slot(slot)
        key = keys_mod.check_importable(value) if value is not None else keys_mod.generate_key()
    except ValueError as exc:
        raise DeploymentError(str(exc)) from None
    key_hash = keys_mod.hash_key(key)
    holder = None
    if value is not None:  # generated keys are 128 random bits
        holder = store.key_holder(key_hash) or server_key_holder(store, key_hash)
        taken = project_key_holder(store, key_hash)
        holder = holder or (f"key {taken.name} of project {taken.project}" if taken is not None else None)
    if holder is not None and holder != f"deployment {deployment.name} ({slot})":
        raise DeploymentConflict(
            f"That key is already in use ({holder}). A key opens one deployment, and a deployment's two slots hold two "
            "keys so that one can be rotated while the other works: choose another value, or leave it out."
        )
    store.set_key(deployment.name, slot, key_hash)
    return key


def regenerate_admin_key(store: Store) -> str:
    key = keys_mod.generate_key()
    store.set_admin_key(keys_mod.hash_key(key))
    return key


def ensure_admin_key(store: Store) -> str | None:
    """Create the admin key if there is none; returns it when created (the only time it can be shown)."""
    if store.admin_key() is not None:
        return None
    return regenerate_admin_key(store)


def describe(deployment: Deployment, now: float | None = None) -> dict[str, Any]:
    """A deployment as the CLI's --json and the management API show it (never a key, never the upstream key)."""
    now = time.time() if now is None else now
    model = find_model(deployment.model)
    body: dict[str, Any] = {
        "name": deployment.name,
        "project": deployment.project,
        "model": deployment.model,
        "type": deployment.type,
        "created_at": iso_time(deployment.created_at),
        "auth": "key" if deployment.type == SERVERLESS else "key, token",
        "billing": "per token" if deployment.type == SERVERLESS else "core-hours",
        "input_modalities": list(model.input_modalities),
    }
    if deployment.upstream_url:
        urls = upstream_urls(deployment.upstream_url)
        body["upstream"] = urls[0] if len(urls) == 1 else urls  # as it was given: one URL, or a pool
        if deployment.upstream_model:
            body["upstream_model"] = deployment.upstream_model
    else:
        body["weights"] = deployment.weights_path
    if deployment.type == MANAGED:
        body["instances"] = deployment.instances
        body["instance_type"] = deployment.instance_type
        body["shared_quota"] = deployment.shared_quota
    if deployment.expires_at is not None:
        body["expires_at"] = iso_time(deployment.expires_at)
        body["expires_in_hours"] = round(max(0.0, deployment.expires_at - now) / 3600, 1)
    if deployment.settings:
        body["settings"] = dict(deployment.settings)
    return body


def describe_model(model: CatalogModel) -> dict[str, Any]:
    """A catalog entry as `models show --json` and `/management/models` show it."""
    body = asdict(model)
    for name in ("input_modalities", "output_modalities", "deployment_types", "languages"):
        body[name] = list(getattr(model, name))
    source = model.weights
    body["weights"] = (
        {"hf_repo": source.hf_repo, "hf_file": source.hf_file, "url": hub_url(source), "sha256": source.sha256}
        if source is not None
        else None
    )
    return body
