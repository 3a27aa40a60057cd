"""Opens a web app in headless Chromium, leaves it idle, then types into it.

    python tests/browser/page_idle.py URL --stay SECONDS
        [--type SELECTOR TEXT [--repeat N]] [--wait-for SELECTOR] [--timeout SECONDS]

What a person's open tab of a non-Jupyter app (code-server, RStudio, a
dashboard) does: the page loads and, after --wait-for shows, sits untouched
for --stay seconds; with --type, a person then clicks SELECTOR and types TEXT
(and Enter), and the page gets two more seconds to send it; --repeat does the
stay and the typing N times (a person at work). The browser is
Debian's Chromium (/usr/bin/chromium, or $PORTICO_CHROMIUM) driven by
Playwright.

Prints one JSON line: {"ok": true, "loaded_ms": N, "idle_until_ms": N,
"typed_ms": N, "client_messages": [[unix ms, bytes], ...]} (every websocket
message the page sent, so a test can show what an idle tab sends) or
{"ok": false, "error": "..."}, and exits 0 or 1.
"""

import argparse
import json
import os
import sys
import time

from playwright.sync_api import Error, sync_playwright


def now_ms() -> int:
    return int(time.time() * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--stay", type=float, required=True)
    parser.add_argument("--type", nargs=2, metavar=("SELECTOR", "TEXT"))
    parser.add_argument("--repeat", type=int, default=1, help="with --type: stay and type this many times")
    parser.add_argument("--wait-for", default="body")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    chromium = os.environ.get("PORTICO_CHROMIUM", "/usr/bin/chromium")
    sent = []
    result = {"ok": False}
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("websocket", lambda ws: ws.on("framesent", lambda p: sent.append([now_ms(), len(p)])))
        try:
            response = page.goto(args.url, wait_until="domcontentloaded", timeout=args.timeout * 1000)
            if response is None or response.status != 200:
                raise RuntimeError(f"GET {args.url} answered {None if response is None else response.status}")
            page.locator(args.wait_for).first.wait_for(timeout=args.timeout * 1000)
            result = {"ok": True, "loaded_ms": now_ms()}
            for round in range(max(1, args.repeat)):
                page.wait_for_timeout(args.stay * 1000)
                result.setdefault("idle_until_ms", now_ms())
                if args.type:
                    selector, text = args.type
                    page.locator(selector).first.click()
                    result.setdefault("typed_ms", now_ms())
                    # Different text each round, and of a different length:
                    # the same-sized message at a steady interval is the
                    # gateway's definition of a heartbeat, not of typing.
                    page.keyboard.type(f"{text}{'-' * (16 * round)}{round}", delay=20)
                    page.keyboard.press("Enter")
                    page.wait_for_timeout(2000)
        except (Error, RuntimeError) as error:
            result = {"ok": False, "error": str(error).splitlines()[0]}
        result["client_messages"] = sent
        browser.close()
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
