"""What serves a deployment: forwarding to its `--upstream` servers (a health-checked pool), or replica processes
of its local weights, sized by its settings (`platform/sizing.py`) with the gateway's prefix-cache tiers.
`Gateway` calls the factory built here for every deployment it starts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from llamafoundry.config import EngineSettings
from llamafoundry.model.gguf_builder import KvShape
from llamafoundry.platform import sizing
from llamafoundry.platform.catalog import find_instance_type, find_model
from llamafoundry.platform.deployments import upstream_urls
from llamafoundry.platform.gateway import BackendFactory
from llamafoundry.platform.replicas import ReplicaSet, ReplicaSpec
from llamafoundry.platform.store import Deployment
from llamafoundry.platform.upstream import UpstreamChatService
from llamafoundry.platform.upstream_pool import UpstreamPool
from llamafoundry.service.backend import ChatBackend

logger = logging.getLogger(__name__)


def local_backend_factory(
    home: Path, verify_tls: bool | str = True, engine: EngineSettings | None = None
) -> BackendFactory:
    """Services for deployments: forwarding to `--upstream`, or to replica processes of the local weights (with the
    KV cache options of the gateway's `engine` settings: its cache type and disk tier, its host-memory budget
    shared out among a deployment's replicas)."""

    def build(deployment: Deployment) -> ChatBackend:
        model = find_model(deployment.model)
        if deployment.upstream_url:
            urls = upstream_urls(deployment.upstream_url)
            provider: UpstreamPool | ReplicaSet = UpstreamPool(urls, deployment.upstream_api_key, deployment.name)
            max_context = model.context_length
        else:
            assert deployment.weights_path is not None
            weights = Path(deployment.weights_path)
            cores = find_instance_type(deployment.instance_type).num_cores if deployment.instance_type else None
            settings = {"kv_cache_type": engine.kv_cache_type, **deployment.settings} if engine else deployment.settings
            shape = sizing.model_shape(weights)
            spec = ReplicaSpec(
                name=deployment.name,
                weights_path=weights,
                model_name=model.name,
                model_provider=model.provider,
                num_replicas=deployment.instances,
                sizing=sizing.resolve(settings, shape, deployment.instances, cores),
                log_dir=home / "logs",
                **_replica_engine_options(engine, deployment.instances),
            )
            _warn_if_host_tier_small(spec, shape)
            provider = ReplicaSet(spec)
            max_context = spec.sizing.ctx_size
        return UpstreamChatService(
            provider, model.name, model.provider, max_context, deployment.upstream_model, verify_tls
        )

    return build


def _warn_if_host_tier_small(spec: ReplicaSpec, shape: KvShape) -> None:
    if spec.prefix_cache_ram is None:
        return
    ctx_size, parallel, kv_cache_type = spec.sizing.ctx_size, spec.sizing.parallel, spec.sizing.kv_cache_type
    warning = sizing.host_tier_shortfall(spec.prefix_cache_ram, shape, ctx_size, parallel, kv_cache_type)
    if warning:
        share = f" (each of its {spec.num_replicas} replicas' share)" if spec.num_replicas > 1 else ""
        logger.warning("deployment %s%s: %s", spec.name, share, warning)


def _replica_engine_options(engine: EngineSettings | None, num_replicas: int) -> dict[str, Any]:
    """What replicas take from the gateway's own engine settings: its prefix-cache tiers (the host memory split
    between them) and its default seed."""
    if engine is None:
        return {}
    return {
        "seed": engine.seed,
        "prefix_cache_ram": engine.prefix_cache_ram // max(1, num_replicas),
        "prefix_cache_dir": engine.prefix_cache_dir,
        "prefix_cache_disk": engine.prefix_cache_disk,
    }
