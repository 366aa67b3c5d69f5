"""The README's MLflow UI screenshots, taken in a real browser (headless Chromium) on the demo's store.

    make demo                                  # writes mlflow.db
    .venv/bin/mbi-predict ui --port 5055 &     # the MLflow UI on the demo's store
    python -m venv /tmp/cdp && /tmp/cdp/bin/pip install websocket-client
    /tmp/cdp/bin/python experiments/screenshots/mlflow_ui.py --url http://localhost:5055 --experiment 1

Writes ``docs/img/mlflow_runs.png`` (the parent run of a demo run expanded: one child run per model) and
``docs/img/mlflow_leaderboard.png`` (the child runs sorted by held-out PEHE, with the shared metric columns). The
UI is driven over Chromium's DevTools protocol (closing the assistant panel, expanding the parent, choosing columns)
because MLflow keeps that view state out of the URL. ``websocket-client`` is needed only here, so it is not a
dependency of the package.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

DOCS = Path(__file__).resolve().parents[2] / "docs" / "img"


class Browser:
    """Headless Chromium driven over the DevTools protocol."""

    def __init__(self, width: int, height: int, port: int = 9333):
        self.profile = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                                      f"--remote-debugging-port={port}", f"--window-size={width},{height}",
                                      f"--user-data-dir={self.profile.name}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                page = next(p for p in pages if p["type"] == "page")
                break
            except Exception:
                time.sleep(0.3)
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
        self.counter = 0
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params):
        self.counter += 1
        self.ws.send(json.dumps({"id": self.counter, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.counter:
                return message.get("result", message)

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.js(expression):
                return
            time.sleep(0.5)
        self.screenshot(Path(tempfile.gettempdir()) / "mlflow_ui_timeout.png")
        raise TimeoutError(expression)

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def type(self, text: str) -> None:
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        print(f"wrote {path}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.profile.cleanup()


CLOSE_ASSISTANT = """(()=>{const b=[...document.querySelectorAll('button')].find(e=>e.getAttribute('aria-label')=='Close');
  if(b){b.click()}; return true})()"""
EXPAND_PARENT = """(()=>{const b=[...document.querySelectorAll('button.du-bois-light-btn-link')]
  .filter(e=>e.innerText.trim()=='')[0]; if(!b) return false; b.click(); return true})()"""
HAS_ROWS = "document.querySelectorAll('[role=row]').length > 3"


def pick_column(browser: Browser, name: str) -> None:
    """Tick one metric in the Columns menu, unless ticked (the UI remembers columns; its items exist once searched)."""
    browser.js("""(()=>{const i=document.querySelector('input[placeholder="Search columns"]'); i.focus();
                  i.select()})()""")
    browser.type(name)
    browser.wait_for(f"""(()=>{{for (const n of document.querySelectorAll('.du-bois-light-tree-treenode')){{
        const t=n.querySelector('.du-bois-light-tree-title'); if(t && t.innerText.trim()=={name!r}){{
        if(!n.className.includes('checkbox-checked')){{n.querySelector('.du-bois-light-tree-checkbox').click()}};
        return true}}}} return false}})()""")
    time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://localhost:5055")
    parser.add_argument("--experiment", default="1", help="the demo experiment's id")
    parser.add_argument("--metrics", nargs="+", default=["pehe", "pehe_ci_low", "pehe_ci_high", "rate_autoc",
                                                         "dr_loss_vs_constant"])
    args = parser.parse_args()
    DOCS.mkdir(parents=True, exist_ok=True)

    browser = Browser(1600, 760)
    try:
        # sorted by start time, the UI nests each model's child run under its parent run
        browser.goto(f"{args.url}/#/experiments/{args.experiment}/runs?orderByKey=attributes.start_time"
                     "&orderByAsc=false")
        browser.wait_for(HAS_ROWS)
        browser.js(CLOSE_ASSISTANT)
        browser.wait_for(EXPAND_PARENT)
        time.sleep(2)
        browser.screenshot(DOCS / "mlflow_runs.png")
    finally:
        browser.close()

    browser = Browser(2100, 680)
    try:
        browser.goto(f"{args.url}/#/experiments/{args.experiment}/runs?orderByKey=metrics.%60{args.metrics[0]}%60"
                     "&orderByAsc=true")
        browser.wait_for(HAS_ROWS)
        browser.js(CLOSE_ASSISTANT)
        browser.js("[...document.querySelectorAll('button')].find(e=>e.innerText.trim()=='Columns').click()")
        browser.wait_for("!!document.querySelector('input[placeholder=\"Search columns\"]')")
        for metric in args.metrics:
            pick_column(browser, metric)
        browser.call("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape",
                     windowsVirtualKeyCode=27)
        time.sleep(2)
        browser.screenshot(DOCS / "mlflow_leaderboard.png")
    finally:
        browser.close()


if __name__ == "__main__":
    main()
