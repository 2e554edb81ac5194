"""The portal's logic in isolation: catalog search and filters, the Deploy form's body and error fields, how a
deployment's status is shown (whatever state it carries), chart data, health rates, sessions and redirects."""

from __future__ import annotations

import pytest

from llamafoundry.api.portal.auth_pages import _next
from llamafoundry.api.portal.catalog_pages import matches
from llamafoundry.api.portal.client import PortalApiError
from llamafoundry.api.portal.deploy_pages import FormError, deployment_body, error_field
from llamafoundry.api.portal.health import HealthReader
from llamafoundry.api.portal.playground_pages import playground_targets
from llamafoundry.api.portal.sessions import (
    ADMIN,
    READ_DEPLOYMENTS,
    USE_SERVER_MODEL,
    WRITE_DEPLOYMENTS,
    WRITE_KEYS,
    Session,
    SessionStore,
    project_principal,
)
from llamafoundry.api.portal.settings_forms import SettingsError, blocklist_body, content_safety_body, size_body
from llamafoundry.api.portal.usage_pages import chart_data
from llamafoundry.api.portal.views import status_view
from llamafoundry.api.portal.web import OwnModel, Portal, dollars
from llamafoundry.platform.catalog import CATALOG
from llamafoundry.platform.deployments import describe_model


def form(**fields: str) -> dict[str, list[str]]:
    return {name: [value] for name, value in fields.items()}


def test_catalog_search_needs_every_word_and_filters_combine() -> None:
    models = [describe_model(m) for m in CATALOG]
    names = {m["name"] for m in models if matches(m, "8b instruct", {"type": "serverless"})}
    assert "Meta-Llama-3.1-8B-Instruct" in names and "Meta-Llama-3.1-8B" not in names
    images = {m["name"] for m in models if matches(m, "", {"input": "image", "preview": "only"})}
    assert images == {m.name for m in CATALOG if m.accepts_images and m.is_preview} and len(images) >= 3
    assert not [m for m in models if matches(m, "", {"input": "text", "tools": "yes", "type": "managed"})
                if "image" in m["input_modalities"] or not m["supports_tools"]]  # fmt: skip
    assert {m["name"] for m in models if matches(m, "thai", {"tools": "no"})}  # languages are searched
    assert not [m for m in models if matches(m, "no-such-model", {})]


def test_the_deploy_form_becomes_the_management_body() -> None:
    body = deployment_body(form(name="chat", model="M", type="managed", source="file", weights="/w.gguf",
                                instances="2", instance_type="Standard_D4as_v4", shared_quota="1", tpm="0", rpm="",
                                content_safety="on"))  # fmt: skip
    assert body == {"name": "chat", "model": "M", "type": "managed", "weights": "/w.gguf", "instances": 2,
                    "instance_type": "Standard_D4as_v4", "shared_quota": True, "tpm": 0,
                    "content_safety": True}  # fmt: skip
    upstream = deployment_body(form(name="u", model="M", source="upstream", upstream="http://h/v1", upstream_key=""))
    assert upstream == {"name": "u", "model": "M", "type": "serverless", "upstream": "http://h/v1"}
    pool = deployment_body(form(name="u", model="M", source="upstream", upstream="http://a/v1, http://b/v1"))
    assert pool["upstream"] == ["http://a/v1", "http://b/v1"]  # a pool, as the management API takes it
    assert "weights" not in deployment_body(form(name="d", model="M", source="catalog", weights="/ignored"))
    for fields, param in ((form(source="file"), "weights"), (form(source="upstream"), "upstream"),
                          (form(instances="two"), "instances")):  # fmt: skip
        with pytest.raises(FormError) as refused:
            deployment_body({**form(name="n", model="M"), **fields})
        assert refused.value.param == param


def test_the_deploy_form_takes_the_project_and_the_sizes_with_the_platforms_sentences() -> None:
    sizes = form(ctx_size="512", parallel="2", threads="", kv_cache_type="q8_0", flash_attn="on", gpu_layers="0",
                 speculative_tokens="4")  # fmt: skip
    body = deployment_body({**form(name="chat", model="M", project="team-a"), **sizes})
    assert body == {"name": "chat", "model": "M", "type": "serverless", "project": "team-a", "ctx_size": 512,
                    "parallel": 2, "kv_cache_type": "q8_0", "flash_attn": "on", "gpu_layers": 0,
                    "speculative_tokens": 4}  # fmt: skip
    with pytest.raises(FormError) as refused:
        deployment_body(form(name="chat", model="M", parallel="two"))
    assert refused.value.param == "parallel"  # the sentence of sizing.sizing_changes, as the CLI and the API say it
    assert refused.value.message.startswith("parallel must be a whole number (sequences decoded together")
    assert "project" not in deployment_body(form(name="chat", model="M", project=""))


def test_the_size_form_sends_only_what_changes() -> None:
    deployment = {"name": "d", "type": "managed", "instances": 1, "settings": {"parallel": 2, "tpm": 5}}
    body = size_body(form(instances="2", parallel="2", ctx_size="1024", kv_cache_type="", threads=""), deployment)
    assert body == {"instances": 2, "ctx_size": 1024}
    for fields, sentence in (({"instances": "1", "parallel": "2"}, "Nothing to change"),
                             ({"ctx_size": "big"}, "ctx_size must be a whole number"),
                             ({"instances": "many"}, "--instances 'many': give a whole number")):  # fmt: skip
        with pytest.raises(SettingsError, match=sentence):
            size_body(form(**fields), deployment)


def test_a_project_key_reads_and_the_playground_uses_it_where_it_opens() -> None:
    principal = project_principal("team-a", "key-1")
    assert principal.can(READ_DEPLOYMENTS) and principal.project == "team-a"
    assert not any(principal.can(p) for p in (WRITE_DEPLOYMENTS, WRITE_KEYS, USE_SERVER_MODEL))
    portal = Portal(OwnModel("server-model", "own-key"))
    session = Session("id", "project-key", principal)
    deployments = [{"name": "a", "model": "M"}, {"name": "b", "model": "M"}]
    targets = playground_targets(portal, session, deployments, ["a"])
    assert [(t["name"], t["key"]) for t in targets] == [("a", "project-key"), ("b", "")]  # no server model
    admin = playground_targets(portal, Session("id2", "admin-key", ADMIN), deployments)
    assert [(t["name"], t["key"]) for t in admin] == [("server-model", "own-key"), ("a", ""), ("b", "")]
    assert [t["key"] for t in playground_targets(portal, session, deployments, "all")] == ["project-key"] * 2


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("This deployment needs 9.5 GiB: weights 0.0 + ...; 2.0 GiB free. Lower --ctx-size or --parallel, ...",
         "ctx_size"),
        ("kv_cache_type q8_0 stores heads in blocks of 32 numbers, and this model's ...", "kv_cache_type"),
        ("Project 'nope' not found. `llamafoundry project list` shows the projects.", "project"),
        ("--instances applies to managed compute only; serverless ...", "instances"),
        ("Give either --weights or --upstream, not both: the model runs in one place.", "weights"),
        ("'x' is not a valid deployment name: use 3 to 32 letters ...", "name"),
        ("A deployment named 'chat' already exists. Choose another name, or delete it.", "name"),
        ("Deployment 'a' already holds the serverless deployment of M; ...", "type"),
        ("Something else went wrong.", None),
    ],
)
def test_a_refusal_is_shown_on_its_field(message: str, field: str | None) -> None:
    assert error_field(PortalApiError(400, message)) == field
    assert error_field(PortalApiError(400, message, param="tpm")) == "tpm"


def test_status_shows_whatever_state_the_api_reports() -> None:
    assert status_view({"state": "ready"}).is_terminal and status_view({"state": "ready"}).label == "Ready"
    failed = status_view({"state": "failed", "error": "llama.cpp could not load the file"})
    assert failed.is_terminal and failed.error == "llama.cpp could not load the file"
    loading = status_view({"state": "starting", "replicas": [{"index": 0, "healthy": False}]})
    assert not loading.is_terminal and loading.label == "Loading" and loading.replicas[0]["index"] == 0
    for progress, percent in ((0.25, 25.0), (40, 40.0), ({"done": 3, "total": 4}, 75.0),
                              ({"downloaded_bytes": 1, "total_bytes": 8}, 12.5), ({"total": 0}, None)):  # fmt: skip
        assert status_view({"state": "downloading", "progress": progress}).percent == percent
    sizing = {"ctx_size": 512, "parallel": 2, "threads": 2, "kv_cache_type": "f16", "flash_attn": "auto",
              "gpu_layers": 0, "speculative_tokens": 15}  # fmt: skip
    ready = {"state": "ready", "replicas": [{"index": 0, "healthy": True}], "sizing": sizing}
    deployment = {"name": "d", "instances": 1, "settings": {"parallel": 2}}
    assert status_view(ready, deployment).is_terminal and status_view(ready, deployment).sizing == sizing
    for changed in ({**deployment, "settings": {"parallel": 3}}, {**deployment, "instances": 2}):  # saved, not yet run
        view = status_view(ready, changed)
        assert (view.state, view.label, view.is_terminal) == ("changing", "Changing", False)
    starting = status_view({**ready, "state": "starting", "changing": "the previous replicas answer"}, deployment)
    assert starting.state == "changing" and "the previous replicas answer" in starting.sentence
    assert status_view({**ready, "state": "failed", "changing": "x"}, deployment).state == "failed"
    odd = status_view({"state": "verifying checksum"})
    assert odd.label == "Verifying checksum" and not odd.is_terminal  # a state added later is shown and polled
    assert status_view(None).state == "unknown"


def test_chart_data_has_one_series_per_deployment_with_zeros_for_quiet_periods() -> None:
    rows = [{"deployment": "a", "period": "2026-01-01T01:00:00Z", "requests": 2, "total_tokens": 10, "cost_usd": None,
             "throttled": 1, "filtered": 0},
            {"deployment": "b", "period": "2026-01-01T00:00:00Z", "requests": 1, "total_tokens": 5, "cost_usd": 0.5,
             "throttled": 0, "filtered": 1}]  # fmt: skip
    data = chart_data(rows)
    assert data["periods"] == ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"] and data["deployments"] == ["a", "b"]
    assert data["series"]["requests"] == {"a": [0, 2], "b": [1, 0]}
    assert data["series"]["cost_usd"] == {"a": [0, 0], "b": [0.5, 0]} and data["series"]["throttled"]["a"] == [0, 1]


def test_health_turns_token_counters_into_rates() -> None:
    metrics = """# TYPE llamafoundry_tokens_total counter
llamafoundry_tokens_total{{deployment="chat",kind="completion"}} {tokens}
llamafoundry_tokens_total{{deployment="chat",kind="prompt"}} 999
# TYPE llamafoundry_queue_depth gauge
llamafoundry_queue_depth{{deployment="own"}} 3
"""
    replica = '# TYPE llamafoundry_requests_running gauge\nllamafoundry_requests_running{deployment="M"} 2\n'
    reader = HealthReader()
    first = reader.read(metrics.format(tokens=100), {"chat": [replica, replica]}, now=10.0)
    assert {h.name: (h.queue_depth, h.running, h.tokens_per_s) for h in first} == {
        "chat": (None, 4.0, None), "own": (3.0, None, None)}  # fmt: skip
    second = reader.read(metrics.format(tokens=150), {}, now=15.0)
    assert next(h for h in second if h.name == "chat").tokens_per_s == 10.0  # 50 completion tokens in 5 s


def test_sessions_expire_when_idle_or_old_and_end_on_sign_out() -> None:
    store = SessionStore(idle_timeout_s=60, max_age_s=300)
    session = store.create("key", ADMIN)
    now = session.created_at
    assert store.get(session.id, now + 50) is session
    assert store.get(session.id, now + 100) is session  # its idle clock restarted at +50
    assert store.get(session.id, now + 301) is None  # too old, however active
    other = store.create("key", ADMIN)
    assert store.get(other.id, other.created_at + 61) is None
    third = store.create("key", ADMIN)
    store.end(third.id)
    assert store.get(third.id) is None and store.get(None) is None and store.get("forged") is None
    assert third.is_csrf_token(third.csrf_token) and not third.is_csrf_token(other.csrf_token)
    assert not third.is_csrf_token(None)


def test_sign_in_returns_only_to_portal_pages() -> None:
    assert _next("/portal/usage?by=day") == "/portal/usage?by=day"
    for target in ("https://evil.example/", "//evil.example/portal", "/management/deployments", "/portal/sign-in",
                   "/portal\\..\\x", None, ""):  # fmt: skip
        assert _next(target) == "/portal/deployments"


def test_settings_forms_and_costs() -> None:
    list_id, body = blocklist_body(form(id="brands", description="d", items="Acme Corp\n\nre: sku-\\d{4}\n"))
    assert (list_id, body) == ("brands", {"items": ["Acme Corp", {"pattern": "sku-\\d{4}", "is_regex": True}],
                                          "description": "d"})  # fmt: skip
    safety = content_safety_body({"enabled": ["1"], "categories": ["hate", "sexual"], "threshold": ["low"]})
    assert safety == {"enabled": True, "threshold": "low", "categories": ["hate", "sexual"], "jailbreak": False,
                      "indirect_attack": False, "streaming": "default", "guard": None}  # fmt: skip
    assert (dollars(None), dollars(0.0), dollars(1.23456), dollars(0.0000091)) == ("n/a", "0.0000", "1.2346",
                                                                                  "0.0000091")  # fmt: skip
