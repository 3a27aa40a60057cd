"""Opens JupyterLab in headless Chromium, creates a notebook and runs a cell.

    python tests/browser/lab_cell.py URL [--header NAME:VALUE]... [--code CODE]
        [--expect TEXT] [--screenshot PNG] [--timeout SECONDS]

URL is the lab page (for Kubeflow: http://host/notebook/<ns>/<name>/lab).
Headers are sent with every request the page makes (Kubeflow's identity
header stands in for the login a real deployment puts in front). The browser
is Debian's Chromium (/usr/bin/chromium, or $PORTICO_CHROMIUM) driven by
Playwright; nothing is downloaded.

Prints one JSON line: {"ok": true, "output": "...", "kernel_ms": N} or
{"ok": false, "error": "...", "screenshot": "..."} and exits 0 or 1, so the
Rust tests can say what a user would have seen.
"""

import argparse
import json
import os
import sys
import time

from playwright.sync_api import Error, sync_playwright


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--header", action="append", default=[], help="NAME:VALUE, sent on every request")
    parser.add_argument("--code", default="print(6 * 7)")
    parser.add_argument("--expect", default="42")
    parser.add_argument("--screenshot", help="where to save a PNG of the page on failure")
    parser.add_argument("--timeout", type=float, default=90.0)
    return parser.parse_args()


def headers_of(pairs: list[str]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep:
            raise SystemExit(f"--header {pair!r}: expected NAME:VALUE")
        headers[name.strip()] = value.strip()
    return headers


def run_cell(page, args) -> dict:
    timeout_ms = args.timeout * 1000
    response = page.goto(args.url, wait_until="domcontentloaded", timeout=timeout_ms)
    if response is None or response.status != 200:
        status = None if response is None else response.status
        return {"ok": False, "error": f"GET {args.url} answered {status}, not 200"}
    # The launcher's notebook card: JupyterLab's own "new notebook" action.
    card = page.locator('.jp-LauncherCard[data-category="Notebook"]').first
    card.wait_for(timeout=timeout_ms)
    card.click()
    editor = page.locator(".jp-NotebookPanel .jp-Cell .cm-content").first
    editor.wait_for(timeout=timeout_ms)
    # A cell run before the notebook's kernel is connected is dropped (the
    # prompt stays "[ ]"), as it would be for a person typing that fast:
    # wait for the kernel's status, as they would see it, to read Idle.
    page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(timeout=timeout_ms)
    editor.click()
    page.keyboard.type(args.code)
    started = time.monotonic()
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-NotebookPanel .jp-OutputArea-output").first
    output.wait_for(timeout=timeout_ms)
    text = output.inner_text(timeout=timeout_ms).strip()
    kernel_ms = round((time.monotonic() - started) * 1000)
    if args.expect not in text:
        return {"ok": False, "error": f"cell printed {text!r}, expected {args.expect!r}"}
    return {"ok": True, "output": text, "kernel_ms": kernel_ms}


def main() -> int:
    args = parse_args()
    chromium = os.environ.get("PORTICO_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(extra_http_headers=headers_of(args.header))
        page = context.new_page()
        try:
            result = run_cell(page, args)
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
