"""Projects as the API and the CLI show them: deployments, keys (ids, never the keys), grants, budgets with what
is spent of them, and this month's usage."""

from __future__ import annotations

import time
from typing import Any

from llamafoundry.platform import budgets as budgets_mod
from llamafoundry.platform import project_keys as keys_mod
from llamafoundry.platform import projects as ops
from llamafoundry.platform.store import Store
from llamafoundry.platform.usage import report, store_pricing


def project_body(store: Store, name: str, full: bool = False) -> dict[str, Any]:
    """A project as the API and `project show --json` give it: its deployments; with `full`, its keys (ids, never
    the keys), grants, budgets and this month's spend too."""
    project = ops.get_project(store, name)
    body = ops.describe_project(project, ops.project_deployments(store, project.name))
    if not full:
        return body
    body["keys"] = [key.describe() for key in keys_mod.list_keys(store, project.name)]
    body["grants"] = [grant.describe() for grant in ops.list_grants(store, project.name)]
    body["budgets"] = budget_bodies(store, project.name)
    month_start, _ = budgets_mod.period_bounds("month", time.time())
    rows = report(store.engine, store_pricing(store, project.name), project=project.name, since=month_start)
    body["usage_this_month"] = {k: v for k, v in rows[-1].as_dict().items() if k not in ("deployment", "period")}
    return body


def budget_bodies(store: Store, project: str) -> list[dict[str, Any]]:
    return [b.describe(budgets_mod.spent(store, b)) for b in budgets_mod.list_budgets(store, project)]
