"""`deploy create/update --tpm/--rpm` store a deployment's limits; the limiter reads them over the type's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamafoundry.cli import main
from llamafoundry.platform.ratelimit import UNLIMITED, RateLimits, deployment_limits, limit_settings
from llamafoundry.platform.store import Store


def limits_of(data_dir: Path, name: str) -> RateLimits | None:
    store = Store.open(data_dir)
    try:
        deployment = store.get_deployment(name)
        assert deployment is not None
        return deployment_limits(deployment.type, deployment.settings)
    finally:
        store.close()


def test_create_then_update_the_limits(tmp_path: Path, tiny_model_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    model = ["--model", "Meta-Llama-3.1-8B-Instruct", "--weights", str(tiny_model_path)]
    assert main(["deploy", "create", "chat", *model, "--tpm", "5000", *data, "--json"]) == 0
    assert limits_of(tmp_path, "chat") == RateLimits(5_000, 1_000)  # rpm: the serverless default
    assert main(["deploy", "update", "chat", "--rpm", "30", *data]) == 0
    assert limits_of(tmp_path, "chat") == RateLimits(5_000, 30)
    assert main(["deploy", "update", "chat", "--tpm", "0", *data]) == 0
    assert limits_of(tmp_path, "chat") == RateLimits(UNLIMITED, 30)
    assert main(["deploy", "update", "missing", "--rpm", "3", *data]) == 1
    assert main(["deploy", "update", "chat", *data]) == 2  # nothing to change


def test_limit_settings_refuse_negative_numbers() -> None:
    assert limit_settings(None, 10) == {"requests_per_minute": 10}
    with pytest.raises(ValueError, match="0 for no limit"):
        limit_settings(-1, None)
