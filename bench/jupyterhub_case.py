"""JupyterHub's proxy, side by side: configurable-http-proxy against Portico.

Issue #19's bench table in one case. Every JupyterHub routes `/user/<name>/`
through configurable-http-proxy (CHP), so the peer here is CHP itself, from
npm, pinned by bench/chp/package-lock.json, against `portico-gateway chp`.
Both are started and driven the way JupyterHub does it (its proxy.py): the
flags it passes (`--ip --port --api-ip --api-port --error-target`), the
token in `CONFIGPROXY_AUTH_TOKEN`, the hub as the `/` route and one
`POST /api/routes/user/<name>` per user (`{"user", "server_name", "target",
"jupyterhub": true}`), no path in the target, so the full path is
forwarded. Nothing Portico-specific is set (no PORTICO_* variables: its
defaults, as a hub would start it; like CHP, no line per request below
--log-level debug).

Three phases, each on fresh proxies:

* traffic, with 100 users routed to the fake notebook, every target in turn
  for a few interleaved rounds (the shared machine's load drifts): keep-alive
  rps and p99 (wrk), latency added over the direct path at a fixed rate, and
  kernel execute round trips in mixed notebook sessions spread over the users;
* websockets: the resident memory each idle kernel websocket costs;
* routes: filled to 10,000 users through the API (RSS then), and
  route add -> first 200 (traefik-proxy's published method: POST the route,
  poll `GET /user/<name>/` until the notebook answers), one add at a time
  and 50 at once.

The hub is a stand-in on a thread here: it answers what the real hub does
for a user whose route does not exist yet (a redirect to /hub/user/...), so
a poll cannot mistake the hub's answer for the notebook's.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import http.server
import json
import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

CHP_VERSION = "5.3.0"
TOKEN = "bench-token"
PROXIES = ("portico-chp", "chp")
# Portico's chp mode with its access log on (keep-alive only).
QUIET = "portico-chp-access-log"


class ChpUnavailable(RuntimeError):
    """CHP could not be installed (no npm, or the registry did not answer)."""


def install_chp(root: Path, log) -> Path:
    """CHP's executable under target/chp, installed with `npm ci` from the
    committed lock when missing or when the lock changed: reproducible, and
    the npm registry is the only network it needs."""
    source, prefix = root / "bench" / "chp", root / "target" / "chp"
    binary = prefix / "node_modules" / ".bin" / "configurable-http-proxy"
    lock = (source / "package-lock.json").read_bytes()
    installed = prefix / "package-lock.json"
    if binary.exists() and installed.exists() and installed.read_bytes() == lock:
        return binary
    if not shutil.which("npm") or not shutil.which("node"):
        raise ChpUnavailable("node and npm are not on the PATH (apt-get install nodejs npm)")
    log(f"installing configurable-http-proxy {CHP_VERSION} under {prefix} (npm ci)")
    prefix.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(source / name, prefix / name)
    run = subprocess.run(["npm", "ci", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error"],
                         capture_output=True, text=True, timeout=300)
    if run.returncode != 0 or not binary.exists():
        installed.unlink(missing_ok=True)
        raise ChpUnavailable(f"npm ci failed: {run.stderr.strip()[-500:]}")
    return binary


# ---------------------------------------------------------------- JupyterHub's side


class Hub:
    """The hub behind the `/` route: a user without a route is redirected to
    /hub/user/<name>/ (the real hub's spawn-pending path), and the
    --error-target pages answer with their code."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path.startswith("/hub/error/"):
                    code = int(self.path.split("/")[3].split("?")[0])
                    self._answer(code, {})
                else:
                    self._answer(302, {"Location": "/hub" + self.path})

            def _answer(self, code: int, headers: dict) -> None:
                body = b"hub"
                self.send_response(code)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Connection:
    """One keep-alive HTTP/1.1 connection (JupyterHub's client keeps its
    connections too), reopened once when the server closed it while idle."""

    def __init__(self, port: int, headers: dict | None = None):
        self.port, self.headers = port, headers or {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def request(self, method: str, path: str, body: dict | None = None) -> int:
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=data, headers=self.headers)
                response = self.conn.getresponse()
                response.read()
                return response.status
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def api(port: int) -> Connection:
    return Connection(port, {"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})


def add_user_route(conn: Connection, user: str, target: str) -> None:
    """JupyterHub's add_user: `/user/<name>/` without its trailing slash."""
    status = conn.request("POST", f"/api/routes/user/{user}",
                          {"user": user, "server_name": "", "target": target, "jupyterhub": True})
    if status != 201:
        raise RuntimeError(f"POST /api/routes/user/{user}: {status}")


class Proxy:
    """One proxy (CHP or Portico's chp mode) started with JupyterHub's flags,
    the hub route in place."""

    def __init__(self, name: str, argv: list[str], work: Path, hub: Hub, tools: dict, env: dict | None = None):
        free_port = tools["free_port"]
        self.name, self.port, self.api_port = name, free_port(), free_port()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PORTICO_") and k != "RUST_LOG"}, **(env or {})}
        env["CONFIGPROXY_AUTH_TOKEN"] = TOKEN
        self.process = tools["Process"](name, [
            *argv, "--ip", "127.0.0.1", "--port", str(self.port), "--api-ip", "127.0.0.1",
            "--api-port", str(self.api_port), "--error-target", f"{hub.url}/hub/error"], work, env=env)
        self.api = api(self.api_port)
        deadline = time.time() + 30
        while True:
            try:
                if self.api.request("GET", "/api/routes") == 200:
                    break
            except OSError:
                self.api.close()
            if time.time() > deadline or self.process.proc.poll() is not None:
                self.process.stop()
                raise RuntimeError(f"{name} did not start; its log:\n{self.process.log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        if self.api.request("POST", "/api/routes/", {"target": hub.url, "hub": True}) != 201:
            raise RuntimeError(f"{name}: the hub route was refused")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """SIGINT: Pingora's fast shutdown (SIGTERM waits out its grace
        period, seconds per proxy), and Node.js exits on it too."""
        self.api.close()
        try:
            os.killpg(self.pid, signal.SIGINT)
            self.process.proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.process.stop()


def start_proxies(bins: Path, chp: Path | None, work: Path, hub: Hub, tools: dict) -> dict[str, Proxy]:
    proxies = {"portico-chp": Proxy("portico-chp", [str(bins / "portico-gateway"), "chp"], work, hub, tools)}
    if chp:
        try:
            proxies["chp"] = Proxy("chp", [str(chp)], work, hub, tools)
        except Exception:
            proxies["portico-chp"].stop()
            raise
    return proxies


# ---------------------------------------------------------------- the traffic phase


# Counts and errors add up over rounds; every other figure is the median.
SUMMED = {"requests", "non_2xx", "socket_errors", "errors", "count"}


def combine(runs: list[dict]) -> dict:
    """One target's interleaved rounds as one result: a round that the
    machine's other work hit moves the median less than it moves a mean."""
    out: dict = {"rounds": runs}
    for key, first in runs[0].items():
        values = [r.get(key) for r in runs]
        if key in SUMMED:
            out[key] = sum(v or 0 for v in values)
        elif key == "error_kinds":
            out[key] = {}
            for kinds in values:
                for kind, n in (kinds or {}).items():
                    out[key][kind] = out[key].get(kind, 0) + n
        elif isinstance(first, (int, float)) and all(isinstance(v, (int, float)) for v in values):
            out[key] = round(statistics.median(values), 3)
        else:
            out[key] = first
    return out


def interleaved(targets: list[str], rounds: int, measure) -> dict:
    """measure(target) for every target in turn, `rounds` times: the shared
    machine's load drifts over minutes, so no target gets all the quiet (or
    all the busy) stretch."""
    runs: dict[str, list[dict]] = {t: [] for t in targets}
    for _ in range(rounds):
        for target in targets:
            runs[target].append(measure(target))
    return {target: combine(r) for target, r in runs.items()}


def keepalive(urls: dict[str, str], pids: dict[str, int], seconds: int, rounds: int, tools: dict) -> dict:
    wrk, cpu_seconds, rss_kib, log = tools["wrk"], tools["cpu_seconds"], tools["rss_kib"], tools["log"]

    def measure(target: str) -> dict:
        log(f"jupyterhub keep-alive {target}: wrk -t2 -c64 for {seconds} s")
        wrk(urls[target], 1)  # warm: connections, the JIT of the Node.js proxy
        cpu = cpu_seconds(pids[target])
        r = wrk(urls[target], seconds)
        cpu = cpu_seconds(pids[target]) - cpu
        r["cpu_us_per_req"] = round(cpu * 1e6 / r["requests"], 1) if r["requests"] else None
        r["rss_kib"] = rss_kib(pids[target])
        log(f"jupyterhub keep-alive {target}: {r['rps']:.0f} rps, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"{r['cpu_us_per_req']} us CPU/req")
        return r

    return interleaved(list(urls), rounds, measure)


def fixed_rate(urls: dict[str, str], pids: dict[str, int], load: Path, seconds: int, rate: int, rounds: int, tools: dict) -> dict:
    def measure(target: str) -> dict:
        tools["log"](f"jupyterhub fixed-rate {target}: {rate}/s for {seconds} s")
        cpu = tools["cpu_seconds"](pids[target])
        r = tools["summarize_latency"](tools["load_on"](target, load, tools["fixed_rate_args"](urls[target], seconds, rate),
                                                        seconds + 60), "request")
        r["cpu_us_per_req"] = round((tools["cpu_seconds"](pids[target]) - cpu) * 1e6 / r["count"], 1) if r["count"] else None
        tools["log"](f"jupyterhub fixed-rate {rate}/s {target}: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
        return r

    results = interleaved(list(urls), rounds, measure)
    for target in results:
        if target != "direct":
            results[target]["added_p50_us"] = round((results[target]["p50_ms"] - results["direct"]["p50_ms"]) * 1000)
            results[target]["added_p99_us"] = round((results[target]["p99_ms"] - results["direct"]["p99_ms"]) * 1000)
    return results


def sessions(bases: dict[str, str], load: Path, users: int, count: int, seconds: int, rounds: int, tools: dict) -> dict:
    """Notebook sessions spread over every user's route: page, api calls, a
    kernel, its websocket, bursts of execute requests."""
    def measure(target: str) -> dict:
        tools["log"](f"jupyterhub sessions {target}: {count} sessions over {users} users for {seconds} s")
        r = tools["summarize_latency"](tools["load_on"](target, load, [
            "sessions", "--base-pattern", bases[target] + "user/u{i}/", "--notebooks", str(users), "--sessions", str(count),
            "--duration", f"{seconds}s", "--execute-interval", "1s"], seconds + 120), "execute")
        tools["log"](f"jupyterhub sessions {target}: execute p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, {r['errors']} errors")
        return r

    return interleaved(list(bases), rounds, measure)


def idle_websockets(bases: dict[str, str], pids: dict[str, int], load: Path, count: int, hold: int, user: str, tools: dict) -> dict:
    """RSS growth per idle kernel websocket, twice on the same fresh
    process: the first round includes the allocator's (or V8 heap's) own
    growth, what a proxy's memory does when a class opens its notebooks;
    the second, after the first closed, is the steady-state cost."""
    results = {}
    for target, base in bases.items():
        pid_args = [arg for pid in tools["tree_pids"](pids[target]) for arg in ("--pid", str(pid))]
        rounds = []
        for number in (1, 2):
            tools["log"](f"jupyterhub: opening {count} idle kernel websockets through {target}, round {number} (held {hold} s)")
            r = tools["load_on"](target, load, ["ws-idle", "--base", f"{base}user/{user}/", "--count", str(count), *pid_args,
                                                "--hold", f"{hold}s"], 600)
            memory = r.get("details", {}).get("memory") or []
            per_process = [m.get("per_connection_kib") for m in memory if m.get("per_connection_kib") is not None]
            rounds.append({"rss_per_connection_kib": round(sum(per_process), 1) if per_process else None, "memory": memory,
                           "errors": r.get("error_total", 0), "error_kinds": r.get("errors", {}), "count": count})
            tools["log"](f"jupyterhub: {count} idle websockets via {target}, round {number}: "
                         f"{rounds[-1]['rss_per_connection_kib']} KiB each")
        errors = sum(x["errors"] for x in rounds)
        kinds: dict[str, int] = {}
        for x in rounds:
            for kind, n in x["error_kinds"].items():
                kinds[kind] = kinds.get(kind, 0) + n
        results[target] = {"count": count * 2, "first_kib": rounds[0]["rss_per_connection_kib"],
                           "steady_kib": rounds[1]["rss_per_connection_kib"], "rounds": rounds,
                           "errors": errors, "error_kinds": kinds}
    return results


# ---------------------------------------------------------------- the routes phase


def add_then_first_200(api_conn: Connection, public: Connection, user: str, target: str) -> float:
    """ms from the POST of a user's route to the notebook's first 200 on it."""
    started = time.perf_counter()
    add_user_route(api_conn, user, target)
    while public.request("GET", f"/user/{user}/") != 200:
        if time.perf_counter() - started > 10:
            raise RuntimeError(f"/user/{user}/: no 200 within 10 s of its POST")
    return (time.perf_counter() - started) * 1000


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)  # noqa: E731
    return {"n": len(ordered), "p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": round(ordered[-1], 2)}


def routes_phase(proxy: Proxy, upstream: str, total: int, adds: int, concurrency: int, tools: dict) -> dict:
    """RSS idle and with `total` users, the POSTs' own time, and add -> first
    200 alone and `concurrency` at once."""
    log, rss_kib = tools["log"], tools["rss_kib"]
    time.sleep(0.5)
    result = {"rss_idle_kib": rss_kib(proxy.pid)}
    posts = []
    for i in range(total):
        started = time.perf_counter()
        add_user_route(proxy.api, f"u{i}", upstream)
        posts.append((time.perf_counter() - started) * 1000)
        if (i + 1) % 2500 == 0:
            log(f"jupyterhub routes {proxy.name}: {i + 1} of {total} users routed")
    time.sleep(1)  # a garbage collector's fair chance
    result["routes"] = total
    result["rss_kib"] = rss_kib(proxy.pid)
    result["post_ms"] = percentiles(posts[-1000:])
    public = Connection(proxy.port)
    result["alone"] = percentiles([add_then_first_200(proxy.api, public, f"one{i}", upstream) for i in range(adds)])
    public.close()
    together: list[float] = []
    conns = [(api(proxy.api_port), Connection(proxy.port)) for _ in range(concurrency)]
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for batch in range(max(1, adds // concurrency)):
            start = threading.Barrier(concurrency)

            def one(i: int) -> float:
                start.wait()
                return add_then_first_200(*conns[i], f"b{batch}x{i}", upstream)

            together += pool.map(one, range(concurrency))
    for a, p in conns:
        a.close()
        p.close()
    result["together"] = percentiles(together)
    result["concurrency"] = concurrency
    result["rss_after_adds_kib"] = rss_kib(proxy.pid)
    log(f"jupyterhub routes {proxy.name}: RSS {result['rss_kib'] // 1024} MiB at {total} users; add -> first 200 "
        f"alone p50 {result['alone']['p50_ms']} ms, {concurrency} at once p50 {result['together']['p50_ms']} ms")
    return result


# ---------------------------------------------------------------- the case


def run(root: Path, bins: Path, work: Path, params: dict, quick: bool, tools: dict) -> dict:
    log = tools["log"]
    # The machine is shared: the load average says how much to trust a run.
    result: dict = {"chp_version": CHP_VERSION, "users": params["users"], "rate": params["rate"], "rounds": params["rounds"],
                    "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        chp = install_chp(root, log)
    except ChpUnavailable as error:
        if not quick:
            raise
        # The test suite must not depend on the npm registry answering.
        log(f"jupyterhub: CHP skipped in --quick, Portico's chp mode measured alone: {error}")
        chp, result["chp_skipped"] = None, str(error)
    up, upstream_port = tools["start_fake_notebook"](bins, work, "jupyterhub-notebook")
    upstream = f"http://127.0.0.1:{upstream_port}"
    hub = Hub()
    load = bins / "portico-load"
    try:
        proxies = start_proxies(bins, chp, work, hub, tools)
        try:
            # Not the comparison, its explanation: like CHP, Portico logs no
            # request below --log-level debug. The same gateway with its
            # access log on (PORTICO_ACCESS_LOG=true), in the keep-alive
            # rounds (a full run only: --quick proves the harness).
            if not quick:
                proxies[QUIET] = Proxy(QUIET, [str(bins / "portico-gateway"), "chp"], work, hub, tools,
                                       env={"PORTICO_ACCESS_LOG": "true"})
            for proxy in proxies.values():
                for i in range(params["users"]):
                    add_user_route(proxy.api, f"u{i}", upstream)
            bases = {"direct": f"{upstream}/", **{name: f"http://127.0.0.1:{p.port}/" for name, p in proxies.items()}}
            pids = {"direct": up.pid, **{name: p.pid for name, p in proxies.items()}}
            last = f"u{params['users'] - 1}"
            urls = {target: f"{base}user/{last}/api/status" for target, base in bases.items()}
            log(f"jupyterhub: {', '.join(bases)} with {params['users']} users routed through the API; "
                f"{params['rounds']} interleaved round(s) per measure")
            result["keepalive"] = keepalive(urls, pids, params["seconds"], params["rounds"], tools)
            compared = [t for t in urls if t != QUIET]
            result["fixed_rate"] = fixed_rate({t: urls[t] for t in compared}, pids, load, params["seconds"], params["rate"],
                                              params["rounds"], tools)
            result["sessions"] = sessions({t: bases[t] for t in compared}, load, params["users"], params["sessions"],
                                          params["session_seconds"], params["rounds"], tools)
        finally:
            for proxy in proxies.values():
                proxy.stop()
        # Fresh proxies: what a websocket costs, not what the sessions left
        # in the allocator's (or the garbage collector's) free lists.
        (work / "websockets").mkdir()
        proxies = start_proxies(bins, chp, work / "websockets", hub, tools)
        try:
            for proxy in proxies.values():
                add_user_route(proxy.api, last, upstream)
            result["idle_websockets"] = idle_websockets({name: f"http://127.0.0.1:{p.port}/" for name, p in proxies.items()},
                                                        {name: p.pid for name, p in proxies.items()}, load,
                                                        params["websockets"], params["hold"], last, tools)
        finally:
            for proxy in proxies.values():
                proxy.stop()
        # Fresh proxies: memory at 10k routes without the traffic's leftovers.
        (work / "routes").mkdir()
        proxies = start_proxies(bins, chp, work / "routes", hub, tools)
        try:
            result["routes"] = {name: routes_phase(p, upstream, params["scale_users"], params["adds"], params["concurrency"], tools)
                                for name, p in proxies.items()}
        finally:
            for proxy in proxies.values():
                proxy.stop()
    finally:
        hub.stop()
        up.stop()
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["table"] = table(result)
    return result


# ---------------------------------------------------------------- the verdict


def ratio(a, b) -> float | None:
    """a / b; none when either is missing or b is not positive (a few idle
    websockets can show a negative RSS growth: the collector ran)."""
    return round(a / b, 2) if a is not None and b is not None and b > 0 else None


def table(r: dict) -> list[dict]:
    """Issue #19's rows: figure, Portico, CHP, the ratio and the target."""
    has_chp = "chp_skipped" not in r
    get = lambda case, target, key: r[case][target][key] if has_chp or target != "chp" else None  # noqa: E731
    rows = []

    def row(figure: str, portico, chp, ratio_value, target: str, met: bool | None) -> None:
        """met: None when the figure has no target or the ratio is unknown."""
        rows.append({"figure": figure, "portico": portico, "chp": chp, "ratio": ratio_value, "target": target, "met": met})

    def within(value: float | None, bound: float, at_least: bool = False) -> bool | None:
        return None if value is None else value >= bound if at_least else value <= bound

    k_p, k_c = get("keepalive", "portico-chp", "rps"), get("keepalive", "chp", "rps")
    rps_ratio = ratio(k_p, k_c)
    row("keep-alive rps (wrk -t2 -c64)", round(k_p), k_c and round(k_c), rps_ratio, ">= 3x CHP", within(rps_ratio, 3, at_least=True))
    p_p, p_c = get("keepalive", "portico-chp", "p99_ms"), get("keepalive", "chp", "p99_ms")
    p99_ratio = ratio(p_p, p_c)
    row("keep-alive p99 ms", p_p, p_c, p99_ratio, "<= 1/10 of CHP", within(p99_ratio, 0.1))
    # The same wrk run against the fake notebook itself: no proxy can add
    # less than nothing, so when this is above CHP's p99 / 10 the row above
    # cannot be met on this machine (wrk, proxy and notebook share its cores).
    d_p = r["keepalive"].get("direct", {}).get("p99_ms")
    row("keep-alive p99 ms, direct to the notebook (no proxy): the floor", d_p, p_c, ratio(d_p, p_c),
        "(explains)", None)
    if QUIET in r["keepalive"]:
        q = r["keepalive"][QUIET]
        row("keep-alive rps, Portico with PORTICO_ACCESS_LOG=true (a line per request; CHP: only at debug)", round(q["rps"]),
            k_c and round(k_c), ratio(q["rps"], k_c), "(explains)", None)
        row("keep-alive p99 ms, the same", q["p99_ms"], p_c, ratio(q["p99_ms"], p_c), "(explains)", None)
        c_c = get("keepalive", "chp", "cpu_us_per_req")
        for target, label in (("portico-chp", "access log off (default)"), (QUIET, "access log on")):
            c_p = r["keepalive"][target]["cpu_us_per_req"]
            row(f"keep-alive CPU us / request, Portico {label}", c_p, c_c, ratio(c_p, c_c), "-", None)
    a_p, a_c = get("fixed_rate", "portico-chp", "added_p99_us"), get("fixed_rate", "chp", "added_p99_us")
    row(f"fixed rate {r['rate']}/s: added p99 us (over direct)", a_p, a_c, ratio(a_p, a_c), "-", None)
    for key, what in (("p50_ms", "p50"), ("p99_ms", "p99")):
        e_p, e_c = get("sessions", "portico-chp", key), get("sessions", "chp", key)
        row(f"kernel execute round trip {what} ms (mixed sessions)", e_p, e_c, ratio(e_p, e_c), "-", None)
    for key, label in (("first_kib", "first round on a fresh proxy"), ("steady_kib", "second round")):
        w_p, w_c = get("idle_websockets", "portico-chp", key), get("idle_websockets", "chp", key)
        w_ratio = ratio(w_p, w_c)
        row(f"idle kernel websocket, RSS KiB each, {label}", w_p, w_c, w_ratio, "<= 1/4 of CHP", within(w_ratio, 0.25))
    routes = r.get("routes", {})
    for key, label in (("alone", "one at a time"), ("together", f"{routes.get('portico-chp', {}).get('concurrency', 50)} at once")):
        for q in ("p50_ms", "p99_ms"):
            v_p = routes["portico-chp"][key][q]
            v_c = routes["chp"][key][q] if "chp" in routes else None
            target = "<= 5 ms" if key == "alone" and q == "p50_ms" else "-"
            row(f"route add -> first 200, {label}, {q[:3]} ms", v_p, v_c, ratio(v_p, v_c), target,
                within(v_p, 5) if target != "-" else None)
    rss = lambda name: round(routes[name]["rss_kib"] / 1024, 1) if name in routes else None  # noqa: E731
    row(f"RSS MiB at {r.get('routes', {}).get('portico-chp', {}).get('routes', '-')} routes", rss("portico-chp"), rss("chp"),
        ratio(rss("portico-chp"), rss("chp")), "-", None)
    errors = {t: sum(r[case].get(t, {}).get("errors", 0) or 0 for case in ("fixed_rate", "sessions", "idle_websockets"))
              + (r["keepalive"].get(t, {}).get("non_2xx", 0) + r["keepalive"].get(t, {}).get("socket_errors", 0) if t in r["keepalive"] else 0)
              for t in PROXIES}
    row("errors (all of the above)", errors["portico-chp"], errors["chp"] if has_chp else None, None, "0", errors["portico-chp"] == 0)
    return rows


def problems(result: dict, wrk_problems, load_problems) -> list[tuple[str, str]]:
    """(target, problem) for every error the case recorded (bench/run's rule:
    any error fails the run)."""
    found = []
    for target, r in result.get("keepalive", {}).items():
        found += [(target, f"keep-alive: {p}") for p in wrk_problems(r)]
    for case, op in (("fixed_rate", "request"), ("sessions", "execute"), ("idle_websockets", "websocket")):
        for target, r in result.get(case, {}).items():
            found += [(target, f"{case}: {p}") for p in load_problems(r, op)]
    return found


def markdown(r: dict) -> list[str]:
    cell = lambda v: "-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)  # noqa: E731
    verdict = {True: "met", False: "**not met**", None: "-"}
    lines = [f"### JupyterHub's proxy: Portico `chp` against configurable-http-proxy {r['chp_version']}", "",
             f"{r['users']} users routed through the REST API as JupyterHub does; keep-alive, fixed rate and sessions "
             f"in {r.get('rounds', 1)} interleaved rounds (medians); websockets and routes on fresh proxies. "
             f"Load average (1, 5, 15 min) {r['loadavg_start']} at the start, {r['loadavg_end']} at the end.", ""]
    if "chp_skipped" in r:
        lines += [f"CHP skipped: {r['chp_skipped']}", ""]
    lines += ["| figure | Portico chp | CHP | Portico / CHP | target | |", "|---|---|---|---|---|---|"]
    for row in r["table"]:
        lines.append(f"| {row['figure']} | {cell(row['portico'])} | {cell(row['chp'])} | {cell(row['ratio'])} | "
                     f"{row['target']} | {verdict[row['met']]} |")
    lines.append("")
    return lines
