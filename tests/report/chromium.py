"""A headless Chromium driven over the DevTools protocol through a pipe (stdlib only: no websocket client).

``load_page(path)`` opens a local file and returns what a reader's browser would report: console errors and
uncaught exceptions, failed resource loads, and every <img> with whether it decoded and its natural size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_IMAGES = """Promise.all(Array.from(document.images).map(img =>
  (img.complete ? Promise.resolve() : new Promise(r => { img.onload = r; img.onerror = r; }))
    .then(() => img.decode().then(() => true, () => false))
    .then(ok => ({ok, width: img.naturalWidth, height: img.naturalHeight, src: img.src.slice(0, 40)}))))"""
_LINKS = """Array.from(document.querySelectorAll('a[href^="#"]')).map(a => a.getAttribute('href').slice(1))
  .filter(id => !document.getElementById(id))"""
_EXTERNAL = """Array.from(document.querySelectorAll('[src],link[href],script')).map(e => e.getAttribute('src') ||
  e.getAttribute('href') || 'inline-script').filter(u => u === 'inline-script' || !u.startsWith('data:'))"""


def find_chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            try:
                subprocess.run([found, "--version"], capture_output=True, timeout=30, check=True)
            except (OSError, subprocess.SubprocessError):
                continue
            return found
    return None


class _Pipe:
    def __init__(self, binary: str, profile: str) -> None:
        import fcntl

        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()
        # the child's ends moved above 3 and 4 first, so wiring them to 3 and 4 cannot overwrite one another
        high_r, high_w = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        os.close(to_child_r)
        os.close(from_child_w)
        to_child_r, from_child_w = high_r, high_w

        def wire() -> None:  # the child reads commands on fd 3 and writes answers on fd 4
            os.dup2(to_child_r, 3, inheritable=True)
            os.dup2(from_child_w, 4, inheritable=True)

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1280,1600", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=wire,
            close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(method)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while time.monotonic() < deadline:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise TimeoutError(method)

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_child_r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_child_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_child_w, self._from_child_r):
            try:
                os.close(fd)
            except OSError:
                pass


def _evaluate(pipe: _Pipe, session: str, expression: str) -> Any:
    result = pipe.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                       session)
    return result.get("result", {}).get("value")


def load_page(binary: str, path: Path, *, width: int = 1280) -> dict[str, Any]:
    """Open ``path`` and report {errors, images, broken_anchors, external, scroll_width}."""
    with tempfile.TemporaryDirectory(prefix="mbi-chromium-") as profile:
        pipe = _Pipe(binary, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page", "Network"):
                pipe.send(f"{domain}.enable", {}, session)
            pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                              "mobile": width < 600}, session)
            pipe.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session)
            pipe.wait_for("Page.loadEventFired")
            images = _evaluate(pipe, session, _IMAGES)
            anchors = _evaluate(pipe, session, _LINKS)
            external = _evaluate(pipe, session, _EXTERNAL)
            scroll_width = _evaluate(pipe, session, "document.documentElement.scrollWidth")
            time.sleep(0.2)
        finally:
            pipe.close()
    errors = []
    for event in pipe.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(str(params.get("exceptionDetails", {}).get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(json.dumps(params.get("args"))[:200])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(params["entry"].get("text", ""))
        elif method == "Network.loadingFailed":
            errors.append(f"failed load: {params.get('errorText')}")
    return {"errors": errors, "images": images, "broken_anchors": anchors, "external": external,
            "scroll_width": scroll_width}
