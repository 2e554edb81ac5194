"""`llamafoundry usage` on a store with metered requests: table, CSV and JSON, filters and grouping."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest

from llamafoundry.cli import main
from llamafoundry.platform.metering import UsageRecord, record_all
from llamafoundry.platform.store import Deployment, Store


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    store = Store.open(tmp_path)
    now = time.time()
    store.add_deployment(Deployment("chat", "Meta-Llama-3.1-8B-Instruct", "serverless", 1, now - 7200), {})
    records = [UsageRecord(f"c{i}", "chat", "primary", now - 60 * i, 1000, 500, 200, 100.0 + i) for i in range(10)] + [
        UsageRecord("t1", "chat", "secondary", now - 30, 0, 0, 429, 1.0),
        UsageRecord("f1", "chat", "primary", now - 20, 1000, 0, 400, 5.0, is_filtered=True),
        UsageRecord("o1", "other", "primary", now - 86400 * 3, 10, 10, 200, 50.0),
    ]
    record_all(store.engine, records)
    store.close()
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["usage", *args]) == 0
    return capsys.readouterr().out


def test_the_table_shows_requests_tokens_errors_latency_and_cost(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run(capsys, "--data-dir", str(data_dir), "--since", "1d")
    chat = next(line for line in out.splitlines() if line.strip().startswith("chat"))
    # 12 requests, 11,000 prompt and 5,000 output tokens, 2 errors (the 429 and the 400), 1 filtered
    assert chat.split()[1:8] == ["12", "11,000", "5,000", "2", "1", "1", "104"]
    assert "other" not in out  # older than a day
    cost = 11 * 0.0003 + 5 * 0.00061  # Meta-Llama-3.1-8B-Instruct's catalog prices per 1k tokens
    assert f"{cost:.4f}" in chat


def test_csv_and_json_for_one_deployment(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = list(csv.DictReader(io.StringIO(run(capsys, "--data-dir", str(data_dir), "--format", "csv"))))
    assert [r["deployment"] for r in rows] == ["chat", "other", "total"]
    assert rows[1]["cost_usd"] == ""  # "other" is not in the store: no price known
    body = json.loads(run(capsys, "--data-dir", str(data_dir), "--format", "json", "--deployment", "other",
                          "--by", "day"))  # fmt: skip
    assert [(r["deployment"], r["requests"]) for r in body["data"]] == [("other", 1)]
    assert body["data"][0]["period"].endswith("T00:00:00Z") and body["total"]["requests"] == 1


def test_a_wrong_date_is_an_error_that_says_what_to_give(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["usage", "--data-dir", str(data_dir), "--since", "last tuesday"]) == 2
    assert "ISO date" in capsys.readouterr().err


def test_small_costs_partial_totals_and_unknown_names_read_clearly(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = Store.open(tmp_path / "small")
    small.add_deployment(Deployment("chat", "Meta-Llama-3.1-8B-Instruct", "serverless", 1, time.time()), {})
    record_all(small.engine, [UsageRecord("s1", "chat", "primary", time.time(), 10, 10, 200, 5.0)])
    small.close()
    out = run(capsys, "--data-dir", str(tmp_path / "small"))
    chat = next(line for line in out.splitlines() if line.strip().startswith("chat"))
    assert chat.split()[-1] == "0.0000091"  # 10 x 0.0003 + 10 x 0.00061 per 1k tokens, not 0.0000
    assert main(["usage", "--data-dir", str(data_dir)]) == 0  # "other" has no price: the total is the priced part
    out, err = capsys.readouterr()
    total = next(line for line in out.splitlines() if line.strip().startswith("total"))
    assert total.split()[-1].endswith("*") and "leaves out what has no price" in err
    assert main(["usage", "--data-dir", str(data_dir), "--deployment", "nope"]) == 2
    assert "No deployment is called 'nope'" in capsys.readouterr().err
    assert main(["usage", "--data-dir", str(data_dir / "missing")]) == 2
    assert "There is no data directory" in capsys.readouterr().err and not (data_dir / "missing").exists()
