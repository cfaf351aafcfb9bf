"""What a person sees in MLflow's UI after `augment run`, read from headless Chromium's DOM: the
experiment's runs table (not MLflow's GenAI overview) with the pipeline run, and that run's page
(the link `augment run` prints) with the verdict tag and the verdict paragraph as its description.

Needs Debian's Chromium (`apt-get install chromium`; `.ci/run` installs it). Without it the test is
skipped on a workstation and fails in CI (CI=true).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from test_servers import free_port, start, stop, wait_http

from augment.tracking import TAG_KIND, TAG_NOTE, TAG_VERDICT

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI") == "true"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not IN_CI,
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium); CI installs it",
    ),
]


def chromium(tmp: Path, url: str, *args: str) -> str:
    """Load ``url`` in a fresh headless Chromium profile; its stdout (the DOM with --dump-dom)."""
    assert CHROMIUM.exists(), "CI must install chromium: see .ci/run"
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1600,1000",  # the table renders only the columns that fit
        "--virtual-time-budget=20000",  # time for the single-page app to fetch the runs and draw them
        *args,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def visible_text(dom: str) -> str:
    """The page's text: scripts, styles and tags removed, whitespace collapsed."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, pipeline_run: dict) -> dict:
    """The session's tiny `augment run` (its store), served by `augment ui` on a free port."""
    tmp = tmp_path_factory.mktemp("ui")
    cfg, result = pipeline_run["cfg"], pipeline_run
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    pipelines = client.search_runs(
        [exp.experiment_id], f"tags.`{TAG_KIND}` = 'pipeline'", order_by=["attributes.start_time ASC"]
    )
    parent = pipelines[0]  # the run whose link `augment run` printed (the flow tests may have added more)
    port = free_port()
    proc = start(
        [sys.executable, "-m", "flows.cli", "ui", "--uri", cfg.tracking.uri, "--port", str(port)],
        tmp / "ui.log",
        dict(os.environ),
        tmp,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120, proc)
        yield {
            "tmp": tmp,
            "base": f"http://127.0.0.1:{port}",
            "exp": exp,
            "parent": parent,
            "pipelines": pipelines,
            "output": result["output"],
        }
    finally:
        stop(proc)


def printed_links(output: str) -> tuple[str, str]:
    """The runs-table link and this run's link that `augment run` prints, as URL fragments."""
    (line,) = [ln for ln in output.splitlines() if ln.startswith("MLflow UI: ")]
    table, run = re.findall(r"(http://\S+)", line)
    return table.split("#", 1)[1], run.rstrip(")").split("#", 1)[1]


def test_the_printed_link_opens_the_runs_table_with_the_verdict_column(ui: dict) -> None:
    exp_id, parent = ui["exp"].experiment_id, ui["parent"]
    table, _ = printed_links(ui["output"])
    assert table.startswith(f"/experiments/{exp_id}/runs?") and "viewStateShareKey=" in table
    text = visible_text(chromium(ui["tmp"], f"{ui['base']}/#{table}", "--dump-dom"))
    assert f"Runs - Experiment {exp_id} - MLflow" in text  # the page title of the runs tab
    assert "Run Name" in text and "Created" in text  # the table's header
    assert parent.info.run_name in text
    n = len(ui["pipelines"])  # the view's filter: pipeline runs only, not their child runs
    assert re.search(rf"\b{n} matching runs?\b", text), text[:2000]
    assert TAG_VERDICT in text and parent.data.tags[TAG_VERDICT] in text, text[:3000]  # the verdict column
    for overview in ("Token Usage", "Tokens per Trace", "Cost Breakdown"):  # the GenAI overview's panels
        assert overview not in text
    shot = ui["tmp"] / "runs.png"
    chromium(ui["tmp"], f"{ui['base']}/#{table}", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_the_printed_link_opens_the_pipeline_run_with_its_verdict(ui: dict) -> None:
    exp_id, parent = ui["exp"].experiment_id, ui["parent"]
    verdict = parent.data.tags[TAG_VERDICT]
    assert verdict  # e.g. "no measurable benefit"
    _, fragment = printed_links(ui["output"])
    assert fragment == f"/experiments/{exp_id}/runs/{parent.info.run_id}"
    text = visible_text(chromium(ui["tmp"], f"{ui['base']}/#{fragment}", "--dump-dom"))
    assert parent.info.run_name in text
    assert "Description" in text and parent.data.tags[TAG_NOTE][:80] in text
    assert f"{TAG_VERDICT} : {verdict}" in text, text[:3000]  # the Tags list: key, colon, value
