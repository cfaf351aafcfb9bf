"""Regenerate docs/mlflow_compare.png: MLflow's compare view of the last two pipeline runs, headless.

Needs Debian's Chromium (``apt-get install chromium``) and a running UI::

    augment run configs/digits.yaml
    augment run configs/digits.yaml --set train.kimg=30 --set evaluate.synthetic_share=0.25
    augment ui --port 5000 &
    .venv/bin/python docs/mlflow_screenshot.py --ui http://127.0.0.1:5000 --out docs/mlflow_compare.png

It drives Chromium over the DevTools protocol (plain ``--screenshot`` cannot click): closes the
assistant side panel, turns on "Show diff only", adds ``downstream/delta_vs_real_classic_pts/real_gan`` to
the parallel-coordinates plot, then captures a 1600x2300 page.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient
from websockets.sync.client import connect

STEPS = [
    'document.querySelector("[data-component-id=\\"mlflow.assistant.chat_panel.close\\"]")?.click()',
    'Array.from(document.querySelectorAll("[role=switch]")).forEach(s => s.click())',
    'const m = document.querySelectorAll("input[role=combobox]")[1]; m.focus(); m.click()',
    "type:downstream/delta_vs_real_classic_pts/real_gan",
    "key:Enter",
    "key:Escape",
    "document.activeElement.blur()",
]


def capture(url: str, out: Path, width: int = 1600, height: int = 2300, port: int = 9333) -> None:
    profile = tempfile.mkdtemp(prefix="chromium-")
    chrome = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as resp:
                    page = next(t for t in json.load(resp) if t["type"] == "page")
                break
            except (OSError, StopIteration):
                time.sleep(0.2)
        ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        ids = iter(range(1, 10**6))

        def call(method: str, **params: object) -> dict:
            n = next(ids)
            ws.send(json.dumps({"id": n, "method": method, "params": params}))
            while (msg := json.loads(ws.recv())).get("id") != n:
                pass
            return msg.get("result", {})

        call("Page.enable")
        call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        call("Page.navigate", url=url)
        time.sleep(12)  # the single-page app fetches runs and draws the plots
        for step in STEPS:
            if step.startswith("type:"):
                call("Input.insertText", text=step[5:])
            elif step.startswith("key:"):
                key, code = step[4:], {"Enter": 13, "Escape": 27}[step[4:]]
                for kind in ("keyDown", "keyUp"):
                    call("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code)
            else:
                call("Runtime.evaluate", expression=step)
            time.sleep(2)
        out.write_bytes(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
    finally:
        os.killpg(chrome.pid, signal.SIGTERM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ui", default="http://127.0.0.1:5000")
    parser.add_argument("--uri", default="sqlite:///mlruns.db", help="the store the UI serves")
    parser.add_argument("--experiment", default="gan-augment")
    parser.add_argument("--out", type=Path, default=Path("docs/mlflow_compare.png"))
    args = parser.parse_args()
    client = MlflowClient(args.uri)
    exp = client.get_experiment_by_name(args.experiment)
    runs = client.search_runs(
        [exp.experiment_id], "tags.`gan_augment.kind` = 'pipeline'", order_by=["attributes.start_time DESC"],
        max_results=2,
    )  # fmt: skip
    ids = json.dumps([r.info.run_id for r in reversed(runs)], separators=(",", ":"))
    capture(f"{args.ui}/#/compare-runs?runs={ids}&experiments=[\"{exp.experiment_id}\"]", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
