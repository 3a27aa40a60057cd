"""Cluster-mode churn for bench/run (issue #16).

On the setup of cluster_case (real API server, controller, cluster-mode
gateway, fake notebook upstream, N existing notebook VirtualServices), for a
fixed window:

- kernel websockets held open through the gateway to an existing notebook
  (portico-load ws-idle); every one that closes is a drop;
- a steady HTTP load on an existing route; every error or non-2xx counts;
- churn: Notebooks churn-<i> created at a fixed rate, each deleted one second
  after it was created;
- a propagation probe every second: probe-<k> created, timed to its first 200
  through the gateway.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import cluster_case
from cluster_case import ApiClient, notebook, notebook_path, vs_name, vs_path


class Churn:
    """Creates churn-<i> at `rate` per second and deletes each one a second
    later, from a thread pool over keep-alive connections.

    The driver also deletes the VirtualService the controller made for the
    Notebook, at once: the test cluster's garbage collector would too, but a
    moment later and at its own pace under this load, and the probe measures
    the gateways, not the collector."""

    def __init__(self, api: ApiClient, ns: str, rate: int, threads: int = 16):
        self.api, self.ns, self.rate = api, ns, rate
        self.pool = concurrent.futures.ThreadPoolExecutor(threads)
        # Bounds the work in flight: when the API server cannot keep up, the
        # schedule slips (and the achieved rate shows it) instead of queueing
        # without end.
        self.in_flight = threading.BoundedSemaphore(threads * 4)
        self.lock = threading.Lock()
        self.counts = {"creates": 0, "deletes": 0, "create_errors": 0, "delete_errors": 0,
                       "vs_already_gone": 0}
        self.first_error: str | None = None

    def run(self, seconds: float, stop: threading.Event) -> float:
        """Drives the churn for `seconds`; returns the seconds it actually ran."""
        started = time.perf_counter()
        created: dict[int, concurrent.futures.Future] = {}
        i = 0
        while not stop.is_set():
            due = started + i / self.rate
            # The window ends on time even when the schedule has slipped:
            # the websockets' hold and the HTTP load are sized to it.
            if due - started >= seconds or time.perf_counter() - started >= seconds:
                break
            time.sleep(max(0.0, due - time.perf_counter()))
            created[i] = self._submit(self._create, i)
            # The one created a second (rate ticks) earlier goes, once its
            # create has answered (waiting here is back-pressure too) and if
            # it succeeded.
            old = i - self.rate
            if old in created and created.pop(old).result():
                self._submit(self._delete, old)
            i += 1
        self.pool.shutdown(wait=True)
        return time.perf_counter() - started

    def _submit(self, work: Callable[[int], bool], i: int) -> concurrent.futures.Future:
        self.in_flight.acquire()
        future = self.pool.submit(work, i)
        future.add_done_callback(lambda _f: self.in_flight.release())
        return future

    def _create(self, i: int) -> bool:
        return self._count("create", lambda: self.api.post(notebook_path(self.ns), notebook(self.ns, f"churn-{i}")))

    def _delete(self, i: int) -> bool:
        name = f"churn-{i}"

        def delete() -> None:
            self.api.request("DELETE", f"{notebook_path(self.ns)}/{name}")
            # 404: the controller had not made it yet; it will not now, its
            # Notebook is gone.
            if self.api.request("DELETE", f"{vs_path(self.ns)}/{vs_name(self.ns, name)}", ok=(404,)) == 404:
                with self.lock:
                    self.counts["vs_already_gone"] += 1
        return self._count("delete", delete)

    def _count(self, kind: str, work: Callable[[], object]) -> bool:
        """Runs `work`, counts it as done or failed; True when done."""
        try:
            work()
            ok = True
        except Exception as error:  # noqa: BLE001 - counted and reported, the churn goes on
            ok = False
            with self.lock:
                self.first_error = self.first_error or str(error)
        with self.lock:
            self.counts[kind + "s" if ok else kind + "_errors"] += 1
        return ok


def probe_loop(api: ApiClient, ns: str, base: str, count: int, stop: threading.Event, status_of: Callable,
               log: Callable) -> tuple[list[float], list[str]]:
    """Every second, probe-<k> created and timed to its first 200 through the
    gateway (up to `count` probes, until `stop`). Each probe runs on its own
    thread, so a propagation slower than a second does not thin the samples."""
    latencies, failures = [], []

    def probe(k: int) -> None:
        name = f"probe-{k}"
        begun = time.perf_counter()
        try:
            api.post(notebook_path(ns), notebook(ns, name))
            cluster_case.wait_routed(base + f"{name}/api/status", status_of, timeout=30)
            latencies.append((time.perf_counter() - begun) * 1000)
        except Exception as error:  # noqa: BLE001 - a probe that never arrives is a result
            failures.append(f"{name}: {error}")

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        for k in range(count):
            time.sleep(max(0.0, started + k - time.perf_counter()))
            if stop.is_set():
                break
            pool.submit(probe, k)
            if k % 10 == 9:
                log(f"  {k + 1} probes sent, {len(latencies)} routed, {len(failures)} failed")
    return latencies, failures


class WebSockets:
    """portico-load ws-idle holding `count` kernel websockets through the gateway."""

    def __init__(self, bins: Path, work: Path, base: str, count: int, hold_s: int):
        self.json = work / "churn-websockets.json"
        self.stderr_path = work / "churn-websockets.log"
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [str(bins / "portico-load"), "ws-idle", "--base", base, "--kernels", "4", "-n", str(count),
             "--hold", f"{hold_s}s", "--json", str(self.json)],
            stdout=subprocess.DEVNULL, stderr=self.stderr)

    def wait_holding(self, timeout: float) -> None:
        """Until every websocket is open (its progress line says "holding")."""
        deadline = time.time() + timeout
        while "holding:" not in self.stderr_path.read_text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"ws-idle exited before holding: {self.stderr_path.read_text()[-2000:]}")
            if time.time() > deadline:
                raise RuntimeError(f"websockets not all open after {timeout:.0f} s")
            time.sleep(0.1)

    def result(self, timeout: float) -> dict:
        self.proc.wait(timeout=timeout)
        self.stderr.close()
        report = json.loads(self.json.read_text())
        sockets = report["details"]["websockets"]
        return {"websockets_opened": sockets["opened"], "websockets_failed": sockets["failed"],
                "websockets_dropped": sockets["opened"] - sockets["open_at_end_of_hold"]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def control_plane_cpu_s(root: Path) -> dict:
    """CPU seconds used so far by the test plane's kube-apiserver and etcd."""
    return {name.replace("-", "_"): cluster_case.cpu_seconds(int((root / f"target/kube/{name}.pid").read_text()))
            for name in ("kube-apiserver", "etcd")}


def run(root: Path, bins: Path, work: Path, existing: int, seconds: int, rate: int, websockets: int, tools: dict) -> dict:
    params = {"existing_notebooks": existing, "seconds": seconds, "churn_rate_target": rate,
              "websockets_requested": websockets, "gc": "by the driver"}
    try:
        return {**params, **_churn(root, bins, work, existing, seconds, rate, websockets, tools)}
    except Exception as error:  # noqa: BLE001 - what broke is the result
        tools["log"](f"cluster churn failed: {error}")
        return {**params, "error": str(error)[-2000:]}
    finally:
        subprocess.run([str(root / "tests/kube/down"), "--quiet"], check=False, stdout=subprocess.DEVNULL)


def _churn(root: Path, bins: Path, work: Path, existing: int, seconds: int, rate: int, websockets: int, tools: dict) -> dict:
    log = tools["log"]
    probes = seconds + 5
    # Resolve entries for every name that is requested: the existing route
    # under load and the probes (the churned notebooks are never requested).
    names = ["nb0"] + [f"probe-{k}" for k in range(probes)]
    api, ns, stack, timings = cluster_case.setup(root, bins, work, f"churn-{existing}", existing, names, tools)
    # Room for the websockets' ramp-up tick and a churn that overruns its window.
    margin = 5 + seconds // 4
    sockets = None
    try:
        log(f"cluster churn: opening {websockets} kernel websockets through the gateway")
        sockets = WebSockets(bins, work, stack.base + "nb0/", websockets, seconds + margin)
        sockets.wait_holding(timeout=120)
        background_json = work / "churn-background.json"
        background = subprocess.Popen(
            [str(bins / "portico-load"), "http", "--url", stack.base + "nb0/api/status", "--connections", "4",
             "--duration", f"{seconds + 1}s", "--rate", "200", "--json", str(background_json)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = stack.usage()
        plane_before = control_plane_cpu_s(root)
        log(f"cluster churn: {rate} creates + {rate} deletes/s for {seconds} s, a probe every second")
        churn = Churn(api, ns, rate)
        stop = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(1) as prober:
            probing = prober.submit(probe_loop, api, ns, stack.base, seconds, stop, tools["status_of"], log)
            ran_s = churn.run(seconds, stop)
            stop.set()
            latencies, failures = probing.result()
        after = stack.usage()
        plane_after = control_plane_cpu_s(root)
        log("cluster churn: waiting for the load and the websockets' hold to end")
        background.wait(timeout=seconds + 60)
        report = json.loads(background_json.read_text()) if background_json.exists() else {}
        sockets_result = sockets.result(timeout=seconds + margin + 120)
        probe = cluster_case.percentiles(latencies)
        result = {
            **timings,
            "achieved_creates_per_s": round(churn.counts["creates"] / ran_s, 1),
            # Deletes start a second into the window (each follows its create by one).
            "achieved_deletes_per_s": round(churn.counts["deletes"] / max(ran_s - 1, 1e-9), 1),
            "churn_s": round(ran_s, 1), **churn.counts, "first_churn_error": churn.first_error,
            "probes": len(latencies), "probe_failures": failures,
            "probe_p50_ms": probe["p50_ms"], "probe_p99_ms": probe["p99_ms"], "probe_max_ms": probe["max_ms"],
            "errors_on_existing_routes": tools["summarize_latency"](report, "request")["errors"] if report else None,
            **sockets_result,
            "controller_rss_kib_before": before["controller_rss_kib"], "controller_rss_kib_after": after["controller_rss_kib"],
            "gateway_rss_kib_before": before["gateway_rss_kib"], "gateway_rss_kib_after": after["gateway_rss_kib"],
            "controller_cpu_s": round(after["controller_cpu_s"] - before["controller_cpu_s"], 2),
            "gateway_cpu_s": round(after["gateway_cpu_s"] - before["gateway_cpu_s"], 2),
            # Whether the API server (the churn's bottleneck when the rate falls short) was busy.
            **{f"{name}_cpu_s": round(plane_after[name] - plane_before[name], 2) for name in plane_before},
        }
        log(f"  churn {result['achieved_creates_per_s']} creates/s, {result['achieved_deletes_per_s']} deletes/s; "
            f"probe p50 {probe['p50_ms']} ms, p99 {probe['p99_ms']} ms, max {probe['max_ms']} ms; "
            f"errors on existing routes {result['errors_on_existing_routes']}; websockets opened "
            f"{result['websockets_opened']}, dropped {result['websockets_dropped']}")
        return result
    finally:
        if sockets:
            sockets.stop()
        stack.stop()
