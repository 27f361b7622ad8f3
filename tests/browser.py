"""Headless Chromium driven over the DevTools protocol, through a pipe: the browser tests' driver.

Why this and not Selenium or Playwright: Debian's `chromium` speaks the DevTools protocol
itself (`--remote-debugging-pipe`: JSON messages ended by NUL on its fds 3 and 4), so the
tests need no driver binary, no extra Python package and no port; Playwright would want a
browser build of its own from outside the package registries. The few commands used here
(navigate, evaluate, mouse and keyboard input, screenshots) are stable parts of the protocol.

Input is real where it matters: clicks are mouse events at the element's centre (so a hidden
or covered element cannot be clicked), text goes in through `Input.insertText`, Enter is a
key event. Only <select> values are set by script, as a person's pick from the native popup.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any


class DevToolsError(RuntimeError):
    pass


class Browser:
    """One Chromium process; pages are its tabs (each with its own sessionStorage)."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.WriteTransport,
    ) -> None:
        self._process = process
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self.version = "?"
        self._pump = asyncio.create_task(self._read_messages())

    @classmethod
    async def launch(
        cls, binary: str, profile: Path, log: Path, width: int = 1280, height: int = 800
    ) -> Browser:
        commands_r, commands_w = os.pipe()
        replies_r, replies_w = os.pipe()
        flags = [
            "--headless",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--mute-audio",
            "--hide-scrollbars",
            # Nothing leaves the machine: no update, sync, safe-browsing or metrics traffic,
            # and no host name resolves (the tests use 127.0.0.1 literally).
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--no-pings",
            "--metrics-recording-only",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ]
        if os.geteuid() == 0:
            # Chromium refuses to start as root with its sandbox on ("Running as root without
            # --no-sandbox is not supported"), and CI runs as root. The page it loads is our
            # own, from loopback, so the sandbox protects nothing here; as any other user the
            # sandbox stays on.
            flags.append("--no-sandbox")
        # The protocol pipe must be the browser's fds 3 and 4; bash puts them there (Python's
        # pass_fds keeps fd numbers, and preexec_fn is unsafe in a threaded test process).
        script = f'exec "$0" "$@" 3<&{commands_r} 4>&{replies_w} {commands_r}<&- {replies_w}>&-'
        with log.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                "bash",
                "-c",
                script,
                binary,
                *flags,
                "about:blank",
                pass_fds=(commands_r, replies_w),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        os.close(commands_r)
        os.close(replies_w)
        loop = asyncio.get_running_loop()
        # Screenshots arrive as one base64 message of a few hundred KiB.
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(replies_r, "rb", buffering=0)
        )
        writer, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(commands_w, "wb", buffering=0)
        )
        browser = cls(process, reader, writer)
        version = await browser.send("Browser.getVersion", timeout=60)
        browser.version = str(version.get("product", "?"))
        return browser

    async def _read_messages(self) -> None:
        try:
            while True:
                raw = await self._reader.readuntil(b"\0")
                message = json.loads(raw[:-1])
                if "id" in message:
                    future = self._pending.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif (page := self._pages.get(message.get("sessionId", ""))) is not None:
                    page.on_event(message["method"], message.get("params", {}))
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(DevToolsError(f"Chromium went away: {e!r}"))

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session_id: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        if self._pump.done():
            raise DevToolsError("Chromium is not running")
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        self._writer.write(json.dumps(message).encode() + b"\0")
        try:
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(message_id, None)
        if "error" in reply:
            raise DevToolsError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def new_page(self, width: int = 1280, height: int = 800) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, target["targetId"], attached["sessionId"])
        self._pages[page.session_id] = page
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    async def close(self) -> None:
        with contextlib.suppress(DevToolsError, TimeoutError):
            await self.send("Browser.close", timeout=5)
        try:
            await asyncio.wait_for(self._process.wait(), 10)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        self._writer.close()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


class Page:
    """One tab. `errors` collects the page's uncaught exceptions and console errors."""

    def __init__(self, browser: Browser, target_id: str, session_id: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id
        self.errors: list[str] = []
        self._loaded = asyncio.Event()

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception", {})
            self.errors.append(str(exception.get("description") or details.get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(
                " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            )

    async def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session_id, timeout)

    async def goto(self, url: str, timeout: float = 30.0) -> None:
        self._loaded.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise DevToolsError(f"navigating to {url}: {result['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise DevToolsError(f"evaluating {expression!r}: {text}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = 30.0) -> Any:
        """Polls `expression` (JavaScript) until it is truthy; its value is returned."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                text = await self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(
                    f"not seen within {timeout:.0f} s: {what}\n--- the page said:\n{text[:3000]}"
                )
            await asyncio.sleep(0.1)

    async def click(self, selector: str) -> None:
        found = await self.evaluate(
            f"""(() => {{
              const e = document.querySelector({json.dumps(selector)});
              if (!e) return "missing";
              e.scrollIntoView({{block: "center", inline: "center"}});
              const r = e.getBoundingClientRect();
              if (!r.width || !r.height) return "invisible";
              const x = r.left + r.width / 2, y = r.top + r.height / 2;
              const top = document.elementFromPoint(x, y);
              if (!top || !(top === e || e.contains(top))) return "covered";
              if (e.disabled) return "disabled";
              return {{x, y}};
            }})()"""
        )
        if not isinstance(found, dict):
            raise AssertionError(f"cannot click {selector}: {found}")
        point = {"x": found["x"], "y": found["y"]}
        await self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", **point})
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, **point, "button": "left", "clickCount": 1},
            )

    async def type(self, selector: str, text: str) -> None:
        """Replaces the field's text with `text`, as typed (it gets input events)."""
        await self.click(selector)
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).select()")
        if text:
            await self.send("Input.insertText", {"text": text})
        else:
            await self.press("Backspace", 8)

    async def press(self, key: str, code: int) -> None:
        text = "\r" if key == "Enter" else ""
        for kind in ("keyDown", "keyUp"):
            await self.send(
                "Input.dispatchKeyEvent",
                {
                    "type": kind,
                    "key": key,
                    "code": key,
                    "windowsVirtualKeyCode": code,
                    **({"text": text} if kind == "keyDown" and text else {}),
                },
            )

    async def choose(self, selector: str, value: str) -> None:
        """Picks an option of a <select>, or fills an input that takes no typing (a date):
        the value and the events a person's pick makes."""
        chosen = await self.evaluate(
            f"""(() => {{
              const e = document.querySelector({json.dumps(selector)});
              if (!e) return "missing";
              if (e.options && ![...e.options].some((o) => o.value === {json.dumps(value)})) {{
                return "no such option";
              }}
              e.focus();
              e.value = {json.dumps(value)};
              if (e.value !== {json.dumps(value)}) return "value refused";
              e.dispatchEvent(new Event("input", {{bubbles: true}}));
              e.dispatchEvent(new Event("change", {{bubbles: true}}));
              return "ok";
            }})()"""
        )
        if chosen != "ok":
            raise AssertionError(f"cannot set {selector} to {value!r}: {chosen}")

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        with contextlib.suppress(DevToolsError, TimeoutError):
            await self.browser.send("Target.closeTarget", {"targetId": self.target_id})
