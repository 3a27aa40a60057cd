"""Opens JupyterLab in headless Chromium, creates a notebook and runs a cell.

    python tests/browser/lab_cell.py URL [--header NAME:VALUE]...
        [--cookie NAME=VALUE]... [--code CODE] [--expect TEXT]
        [--screenshot PNG] [--timeout SECONDS] [--stay SECONDS]

URL is the lab page (for Kubeflow: http://host/notebook/<ns>/<name>/lab).
Headers are sent with every request the page makes (Kubeflow's identity
header stands in for the login a real deployment puts in front). Cookies are
set for URL's origin before the page loads (JupyterHub's login cookies: the
browser then follows the hub's OAuth redirects like a user who logged in,
and keeps the cookies those set). The browser
is Debian's Chromium (/usr/bin/chromium, or $PORTICO_CHROMIUM) driven by
Playwright; nothing is downloaded.

With PORTICO_LAB_TRACE=FILE, the page's websocket frames and console
messages are appended to FILE (what the page sent and received, when a run
fails).

With --stay, the tab then stays open and untouched for that long, as a
person's forgotten tab does (the activity tests watch what it sends), and the
result also has "cell_done_ms" (Unix ms when the output showed),
"stayed_until_ms", and "kernel_frames": "binary" when the kernel websocket
carried Jupyter's v1.kernel.websocket.jupyter.org protocol, "text" for the
JSON one.

Prints one JSON line: {"ok": true, "output": "...", "kernel_ms": N} or
{"ok": false, "error": "...", "screenshot": "..."} and exits 0 or 1, so the
Rust tests can say what a user would have seen.
"""

import argparse
import json
import os
import sys
import time
from urllib.parse import urlsplit

from playwright.sync_api import Error, sync_playwright


# Runs of the cell before giving up, and how long each but the last waits.
RUN_ATTEMPTS = 3
RERUN_AFTER_MS = 15000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--header", action="append", default=[], help="NAME:VALUE, sent on every request")
    parser.add_argument("--cookie", action="append", default=[], help="NAME=VALUE, set for URL's origin")
    parser.add_argument("--code", default="print(6 * 7)")
    parser.add_argument("--expect", default="42")
    parser.add_argument("--screenshot", help="where to save a PNG of the page on failure")
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument(
        "--allow-starting",
        action="store_true",
        help="the first load may be the gateway's starting page (503): watch its phases until it turns into the lab",
    )
    parser.add_argument("--stay", type=float, default=0.0, help="seconds to leave the tab open after the cell")
    return parser.parse_args()


def headers_of(pairs: list[str]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep:
            raise SystemExit(f"--header {pair!r}: expected NAME:VALUE")
        headers[name.strip()] = value.strip()
    return headers


def cookies_of(pairs: list[str], url: str) -> list[dict]:
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}/"
    cookies = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--cookie {pair!r}: expected NAME=VALUE")
        cookies.append({"name": name.strip(), "value": value.strip(), "url": origin})
    return cookies


def run_cell(page, args) -> dict:
    timeout_ms = args.timeout * 1000
    response = page.goto(args.url, wait_until="domcontentloaded", timeout=timeout_ms)
    status = None if response is None else response.status
    phases = []
    if status == 503 and args.allow_starting and page.locator("#starting").count() == 1:
        phases = watch_starting_page(page, args.timeout)
    elif status != 200:
        return {"ok": False, "error": f"GET {args.url} answered {status}, not 200"}
    # The launcher's notebook card: JupyterLab's own "new notebook" action.
    card = page.locator('.jp-LauncherCard[data-category="Notebook"]').first
    card.wait_for(timeout=timeout_ms)
    card.click()
    editor = page.locator(".jp-NotebookPanel .jp-Cell .cm-content").first
    editor.wait_for(timeout=timeout_ms)
    # A cell run before the new kernel reports idle can be dropped by the
    # page (seen on a loaded machine): wait for the toolbar's indicator.
    idle = page.locator('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]').first
    idle.wait_for(timeout=timeout_ms)
    editor.click()
    page.keyboard.type(args.code)
    started = time.monotonic()
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-NotebookPanel .jp-OutputArea-output").first
    # On a loaded machine the keystrokes can reach the editor's view before
    # its model: the run then sees an empty cell and sends nothing (no
    # execute_request on the kernel websocket). Run the first cell again,
    # in place, while no output came.
    for attempt in range(RUN_ATTEMPTS):
        last = attempt == RUN_ATTEMPTS - 1
        try:
            output.wait_for(timeout=timeout_ms if last else RERUN_AFTER_MS)
            break
        except Error:
            if last:
                raise
            editor.click()
            page.keyboard.press("Control+Enter")
    text = output.inner_text(timeout=timeout_ms).strip()
    kernel_ms = round((time.monotonic() - started) * 1000)
    if args.expect not in text:
        return {"ok": False, "error": f"cell printed {text!r}, expected {args.expect!r}"}
    return {"ok": True, "output": text, "kernel_ms": kernel_ms, "starting_phases": phases}


def watch_starting_page(page, timeout: float) -> list[str]:
    """The phases the starting page showed, in order, until it reloaded."""
    phases = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if page.locator("#starting").count() == 0:
                break
            phase = page.get_attribute("#starting", "data-current", timeout=1000)
        except Error:
            # The page is being replaced by the notebook's.
            break
        if phase and (not phases or phases[-1] != phase):
            phases.append(phase)
        time.sleep(0.2)
    return phases


def main() -> int:
    args = parse_args()
    chromium = os.environ.get("PORTICO_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(extra_http_headers=headers_of(args.header))
        if args.cookie:
            context.add_cookies(cookies_of(args.cookie, args.url))
        page = context.new_page()
        trace = os.environ.get("PORTICO_LAB_TRACE")
        if trace:
            log = open(trace, "a")
            def on_ws(ws):
                log.write(f"open {ws.url}\n")
                ws.on("framesent", lambda p: log.write(f"sent {str(p)[:300]}\n"))
                ws.on("framereceived", lambda p: log.write(f"recv {str(p)[:300]}\n"))
                ws.on("close", lambda _: log.write("close\n"))
            page.on("websocket", on_ws)
            page.on("console", lambda m: log.write(f"console {m.type}: {m.text[:300]}\n"))
        # What the page sends on its kernel websocket: binary frames are the
        # v1 protocol, text frames the JSON one.
        kernel_frames = set()
        def on_kernel_ws(ws):
            if "/api/kernels/" in ws.url and "/channels" in ws.url:
                ws.on("framesent", lambda p: kernel_frames.add("binary" if isinstance(p, bytes) else "text"))
        page.on("websocket", on_kernel_ws)
        try:
            result = run_cell(page, args)
            if result["ok"] and args.stay > 0:
                result["cell_done_ms"] = int(time.time() * 1000)
                page.wait_for_timeout(args.stay * 1000)
                result["stayed_until_ms"] = int(time.time() * 1000)
                result["kernel_frames"] = ",".join(sorted(kernel_frames)) or "none"
        except Error as error:
            result = {"ok": False, "error": str(error).splitlines()[0]}
        if not result["ok"] and args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
            result["screenshot"] = args.screenshot
        browser.close()
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
