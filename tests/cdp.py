"""Headless Chromium driven over the DevTools protocol on a pipe, for page checks in tests.

`--remote-debugging-pipe` makes Chromium read protocol commands from fd 3 and write replies
and events to fd 4, NUL-separated JSON: no websocket client, no extra package. What a test
needs and `--dump-dom` / `--screenshot` cannot give: a viewport of an exact width (the window
of `--dump-dom` is at least 500 px wide), mobile emulation (which honours
`<meta name="viewport">`), values computed by the page's own layout, full-page screenshots.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any


class Chromium:
    """One headless browser; `page()` opens a tab, `close()` ends the process."""

    def __init__(self, binary: str, flags: list[str], timeout: float = 60.0) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Both child ends move to 10 and up first, so that placing them on 3 and 4 cannot clobber one.
        child_r, child_w = _dup_high(to_chrome_r), _dup_high(from_chrome_w)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def on_fds_3_and_4() -> None:
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.proc = subprocess.Popen([binary, "--headless", "--remote-debugging-pipe", *flags, "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=on_fds_3_and_4, close_fds=False)  # our fds are non-inheritable
        os.close(child_r)
        os.close(child_w)
        self.timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self._events.append(reply)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        """The first event `method` of `session` (one already received counts)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self._events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self._events.pop(i)
            self._events.append(self._read_message(deadline))

    def page(self, url: str, width: int, height: int, mobile: bool) -> Page:
        """A new tab showing `url` loaded at a `width` x `height` CSS px viewport (device scale 1)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}, session)
        self.send("Page.enable", session=session)
        self.send("Page.navigate", {"url": url}, session)
        self.wait_event("Page.loadEventFired", session)
        return Page(self, session, width)

    def close(self) -> None:
        """End the browser (politely, then for sure) and the pipes."""
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


class Page:
    """One loaded tab."""

    def __init__(self, browser: Chromium, session: str, width: int) -> None:
        self.browser, self.session, self.width = browser, session, width

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page."""
        result = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                   self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page, the viewport's width wide, written to `path`."""
        height = self.evaluate("document.documentElement.scrollHeight")
        shot = self.browser.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}}, self.session)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


def _dup_high(fd: int) -> int:
    """A duplicate of `fd` numbered 10 or more."""
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
