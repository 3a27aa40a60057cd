"""Cluster-mode route propagation for bench/run, and the pieces the churn case
(cluster_churn.py) shares with it.

A Notebook POSTed to the real API server (tests/kube) -> the controller
reconciles it into a VirtualService -> the route index -> a discovery delta
-> the gateway -> the first 200 through it. Measured with N existing
notebook routes (VirtualServices created up front, as the notebooks' would
be), while a steady load on an existing route counts errors.

Each size runs on a fresh control plane (tests/kube/down + up wipes etcd), so
the objects of one size do not weigh on the next, and a size the plane cannot
hold is recorded with what broke instead of ending the run.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: bytes):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500].decode(errors='replace')}")
        self.status = status


class ApiClient:
    """The test API server over HTTPS with the admin client certificate, one
    keep-alive connection per thread: a TLS handshake per request (urllib)
    or the extra hop of kubectl proxy would cost more than the request."""

    def __init__(self, root: Path):
        env = dict(line.split("=", 1) for line in (root / "target/kube/env").read_text().splitlines()
                   if "=" in line and not line.startswith("#"))
        self.port = int(env["KUBE_APISERVER_PORT"])
        pki = Path(env["KUBE_PKI"])
        self.tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.tls.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPSConnection:
        if getattr(self.local, "connection", None) is None:
            self.local.connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.tls, timeout=60)
        return self.local.connection

    def _exchange(self, method: str, path: str, body: dict | None) -> tuple[http.client.HTTPResponse, bytes]:
        """One request on this thread's connection, and its body."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                return response, response.read()
            except (http.client.HTTPException, ConnectionError):
                # The server closed an idle keep-alive connection: reconnect once.
                connection.close()
                self.local.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable: the second attempt returns or raises")

    def request(self, method: str, path: str, body: dict | None = None, ok: tuple[int, ...] = (),
                retry_until: float | None = None) -> int:
        """Sends one request; raises ApiError unless the status is 2xx or in
        `ok`. A 429 is retried as the server asks, for up to 30 s."""
        retry_until = time.time() + 30 if retry_until is None else retry_until
        response, payload = self._exchange(method, path, body)
        if response.status == 429 and time.time() < retry_until:
            # "storage is (re)initializing": a CRD served a moment after it
            # was established, or an API server under load. Kubernetes'
            # clients wait as it asks and retry.
            time.sleep(_retry_after(response))
            return self.request(method, path, body, ok, retry_until)
        if not (200 <= response.status < 300 or response.status in ok):
            raise ApiError(method, path, response.status, payload)
        return response.status

    def post(self, path: str, body: dict) -> int:
        return self.request("POST", path, body)

    def get_json(self, path: str) -> dict:
        """GET `path` and its JSON body."""
        response, payload = self._exchange("GET", path, None)
        if response.status != 200:
            raise ApiError("GET", path, response.status, payload)
        return json.loads(payload)


def _retry_after(response: http.client.HTTPResponse) -> float:
    """Seconds a 429 asks the client to wait (Retry-After), 1 by default."""
    try:
        return min(float(response.getheader("Retry-After") or 1), 5.0)
    except ValueError:
        return 1.0


def vs_path(ns: str) -> str:
    return f"/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices"


def notebook_path(ns: str) -> str:
    return f"/apis/kubeflow.org/v1/namespaces/{ns}/notebooks"


def vs_name(ns: str, name: str) -> str:
    """The name the controller gives a notebook's VirtualService."""
    return f"notebook-{ns}-{name}"


def _vs(ns: str, name: str) -> dict:
    prefix = f"/notebook/{ns}/{name}/"
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": vs_name(ns, name), "namespace": ns},
            "spec": {"hosts": ["*"], "gateways": [f"{ns}/kubeflow-gateway"],
                     "http": [{"match": [{"uri": {"prefix": prefix}}], "rewrite": {"uri": prefix},
                               "route": [{"destination": {"host": f"{name}.{ns}.svc.cluster.local", "port": {"number": 80}}}],
                               "timeout": "300s"}]}}


def notebook(ns: str, name: str) -> dict:
    return {"apiVersion": "kubeflow.org/v1", "kind": "Notebook", "metadata": {"name": name, "namespace": ns},
            "spec": {"template": {"spec": {"containers": [{"name": name, "image": "kubeflownotebookswg/jupyter-scipy"}]}}}}


def kube_env(root: Path) -> dict:
    env = {**os.environ, "KUBECONFIG": str(root / "target/kube/kubeconfig"), "RUST_LOG": os.environ.get("PORTICO_BENCH_LOG", "warn")}
    for key in list(env):
        if key.startswith("PORTICO_") or key.startswith("ISTIO_"):
            env.pop(key)
    return env


def fresh_control_plane(root: Path, env: dict, log: Callable) -> ApiClient:
    """A new etcd + kube-apiserver with the CRDs, and a client for it."""
    log("cluster: starting a fresh control plane (tests/kube/down + up)")
    subprocess.run([str(root / "tests/kube/down"), "--quiet"], check=True, stdout=subprocess.DEVNULL)
    # No EndpointSlice controller: the notebooks' Services (the controller
    # makes them) would get empty slices, which the gateway prefers to its
    # --resolve to the fake upstream. What is measured is the route's path.
    up_env = {**os.environ, "KUBE_CONTROLLERS": "garbagecollector,namespace,serviceaccount,serviceaccount-token"}
    subprocess.run([str(root / "tests/kube/up")], check=True, stdout=subprocess.DEVNULL, env=up_env)
    subprocess.run(["kubectl", "apply", "-k", str(root / "manifests/crds")], env=env, check=True, stdout=subprocess.DEVNULL)
    # A CRD is served a moment after it is Established; wait for both kinds.
    api = ApiClient(root)
    deadline = time.time() + 60
    for path in (vs_path("default"), notebook_path("default")):
        while api.request("GET", path, ok=(404,)) == 404:
            if time.time() > deadline:
                raise RuntimeError(f"{path} not served 60 s after the CRDs were applied")
            time.sleep(0.2)
    return api


def create_namespace(api: ApiClient, ns: str) -> None:
    """The namespace and its kubeflow-gateway Gateway."""
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    api.post(f"/apis/networking.istio.io/v1/namespaces/{ns}/gateways", {
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "kubeflow-gateway", "namespace": ns},
        "spec": {"selector": {"istio": "ingressgateway"},
                 "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}})


def create_virtualservices(api: ApiClient, ns: str, count: int, log: Callable, threads: int = 16) -> float:
    """Creates nb0..nb<count-1>'s VirtualServices; returns the seconds it took."""
    log(f"cluster: creating {count} notebook VirtualServices in {ns}")
    started = time.perf_counter()
    done = 0
    next_report = started + 10
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda i: api.post(vs_path(ns), _vs(ns, f"nb{i}")), range(count)):
            done += 1
            now = time.perf_counter()
            if now >= next_report:
                log(f"  {done}/{count} created ({done / (now - started):.0f}/s)")
                next_report = now + 10
    seconds = time.perf_counter() - started
    log(f"  created {count} in {seconds:.1f} s ({count / seconds:.0f}/s)")
    return seconds


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stack:
    """The fake notebook, the controller confined to `ns`, and a cluster-mode
    gateway that resolves `names`' Services to the fake notebook."""

    def __init__(self, bins: Path, work: Path, tag: str, ns: str, env: dict, names: list[str], tools: dict):
        free_port, Process = tools["free_port"], tools["Process"]
        self.rss_kib = tools["rss_kib"]
        self.processes = []
        try:
            up, upstream = tools["start_fake_notebook"](bins, work, f"fake-{tag}")
            self.processes.append(up)
            self.controller, ports = tools["start_controller"](
                bins, work, f"controller-{tag}", ns, {**env, "ISTIO_GATEWAY": f"{ns}/kubeflow-gateway"})
            self.processes.append(self.controller)
            port, admin, health, metrics = free_port(), free_port(), free_port(), free_port()
            resolves = ",".join(f"{n}.{ns}.svc.cluster.local:80=127.0.0.1:{upstream}" for n in names)
            self.gateway = Process(f"gateway-{tag}", [
                str(bins / "portico-gateway"), "--discovery", f"http://127.0.0.1:{ports['discovery']}",
                "--bind", f"80=127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}", "--health", f"127.0.0.1:{health}",
                "--metrics", f"127.0.0.1:{metrics}", "--threads", "2", "--access-log", "false", "--resolve", resolves,
                "--upgrade-sock", str(work / f"upgrade-{tag}.sock")], work, env=env)
            self.processes.append(self.gateway)
            tools["wait_http"](f"http://127.0.0.1:{health}/healthz/ready", timeout=300)
        except BaseException:
            self.stop()
            raise
        self.base = f"http://127.0.0.1:{port}/notebook/{ns}/"

    def usage(self) -> dict:
        """RSS (KiB) and CPU seconds of the controller and the gateway now."""
        return {"controller_rss_kib": self.rss_kib(self.controller.pid), "gateway_rss_kib": self.rss_kib(self.gateway.pid),
                "controller_cpu_s": cpu_seconds(self.controller.pid), "gateway_cpu_s": cpu_seconds(self.gateway.pid)}

    def gateway_log_tail(self) -> str:
        return self.gateway.log_path.read_text()[-3000:]

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def wait_routed(url: str, status_of: Callable, timeout: float, poll: float = 0.001) -> float:
    """Polls `url` until it answers 200; returns the seconds that took. Past
    200 ms the polls space out to 10 ms: many slow probes at once must not
    load the gateway they measure (10 ms is noise on such a sample)."""
    begun = time.perf_counter()
    while status_of(url) != 200:
        waited = time.perf_counter() - begun
        if waited > timeout:
            raise TimeoutError(f"{url} not routed after {timeout:.0f} s")
        time.sleep(poll if waited < 0.2 else max(poll, 0.01))
    return time.perf_counter() - begun


def setup(root: Path, bins: Path, work: Path, tag: str, count: int, names: list[str], tools: dict) -> tuple[ApiClient, str, Stack, dict]:
    """A fresh plane holding `count` notebook VirtualServices, the stack on it,
    and the gateway serving them all. Returns the client, namespace, stack and
    the setup timings."""
    log = tools["log"]
    env = kube_env(root)
    api = fresh_control_plane(root, env, log)
    ns = f"bench-{tag}"
    create_namespace(api, ns)
    timings = {"setup_s": round(create_virtualservices(api, ns, count, log), 1)}
    log(f"cluster: starting the controller and gateway on {count} VirtualServices")
    started = time.perf_counter()
    stack = Stack(bins, work, tag, ns, env, names, tools)
    try:
        # The first full state holds every existing route.
        wait_routed(stack.base + "nb0/api/status", tools["status_of"], timeout=600, poll=0.05)
    except BaseException:
        stack.stop()
        raise
    timings["initial_sync_s"] = round(time.perf_counter() - started, 1)
    log(f"  gateway serving the existing routes {timings['initial_sync_s']} s after start")
    return api, ns, stack, timings


def percentiles(samples_ms: list[float]) -> dict:
    ordered = sorted(samples_ms)
    if not ordered:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"p50_ms": round(ordered[len(ordered) // 2], 1),
            "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 1),
            "max_ms": round(ordered[-1], 1)}


def run(root: Path, bins: Path, work: Path, existing_counts: list[int], samples: int, tools: dict) -> dict:
    """tools: bench/run's helpers (log, free_port, wait_http, status_of, rss_kib, Process,
    summarize_latency, start_fake_notebook, start_controller)."""
    results = {}
    try:
        for count in existing_counts:
            try:
                results[str(count)] = _one(root, bins, work, count, samples, tools)
            except Exception as error:  # noqa: BLE001 - a size the machine cannot hold is a result
                tools["log"](f"cluster propagation at {count} failed: {error}")
                results[str(count)] = {"existing_notebooks": count, "error": str(error)[-2000:]}
    finally:
        # Tens of thousands of objects keep an idle API server busy; free the machine.
        subprocess.run([str(root / "tests/kube/down"), "--quiet"], check=False, stdout=subprocess.DEVNULL)
    return results


def _one(root: Path, bins: Path, work: Path, count: int, samples: int, tools: dict) -> dict:
    log, status_of = tools["log"], tools["status_of"]
    names = [f"new{i}" for i in range(samples)] + ["nb0"]
    api, ns, stack, timings = setup(root, bins, work, f"cluster-{count}", count, names, tools)
    try:
        background_json = work / f"cluster-background-{count}.json"
        background_seconds = 10 + samples
        background = subprocess.Popen(
            [str(bins / "portico-load"), "http", "--url", stack.base + "nb0/api/status", "--connections", "4",
             "--duration", f"{background_seconds}s", "--rate", "200", "--json", str(background_json)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = stack.usage()
        latencies = []
        log(f"cluster propagation: {samples} samples at {count} existing")
        for i in range(samples):
            begun = time.perf_counter()
            api.post(notebook_path(ns), notebook(ns, f"new{i}"))
            try:
                wait_routed(stack.base + f"new{i}/api/status", status_of, timeout=30)
            except TimeoutError as error:
                raise RuntimeError(f"{error}; gateway log:\n{stack.gateway_log_tail()}") from None
            latencies.append((time.perf_counter() - begun) * 1000)
        after = stack.usage()
        background.wait(timeout=background_seconds + 60)
        report = json.loads(background_json.read_text()) if background_json.exists() else {}
        errors = tools["summarize_latency"](report, "request")["errors"] if report else None
        result = {"existing_notebooks": count, **timings, "samples": len(latencies), **percentiles(latencies),
                  "errors_on_existing_routes": errors,
                  "controller_rss_kib": after["controller_rss_kib"], "gateway_rss_kib": after["gateway_rss_kib"],
                  # CPU of the sampled phase over its changes: the cost of one change,
                  # plus the background load's share on the gateway.
                  "controller_cpu_ms_per_change": round((after["controller_cpu_s"] - before["controller_cpu_s"]) * 1000 / samples, 2),
                  "gateway_cpu_ms_per_change": round((after["gateway_cpu_s"] - before["gateway_cpu_s"]) * 1000 / samples, 2)}
        log(f"  {count} existing: setup {result['setup_s']} s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
            f"errors {errors}, controller RSS {result['controller_rss_kib'] // 1024} MiB, "
            f"gateway RSS {result['gateway_rss_kib'] // 1024} MiB, CPU per change controller "
            f"{result['controller_cpu_ms_per_change']} ms, gateway {result['gateway_cpu_ms_per_change']} ms")
        return result
    finally:
        stack.stop()
