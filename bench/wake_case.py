"""Waking stopped notebooks, for bench/run (issue 17's wake figures).

N stopped Notebooks on the real API server, the controller and a
cluster-mode gateway. All N owners come back at once: each opens the
notebook (a page navigation: the gateway asks the controller to wake it and
answers with the starting page) and right after sends an API request, which
the gateway holds. The bench plays the kubelet and the EndpointSlice
controller: as soon as the controller has removed a Notebook's
`kubeflow-resource-stopped`, it writes a ready endpoint (the fake notebook)
for it. Measured per notebook: endpoint ready (the EndpointSlice accepted by
the API server) -> first byte of the held request's answer, which is the
controller's watch, its build, the push, the gateway's apply and the release
of the held request; and every held request that did not end in a 200 is
lost.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import subprocess
import threading
import time
from pathlib import Path

import cluster_case

STOP = "kubeflow-resource-stopped"
# The host's address on the test cluster's pod network (tests/kube/up): an
# EndpointSlice may not name a loopback address.
NODE_IP = "198.19.255.254"


def _stopped_notebook(ns: str, name: str) -> dict:
    body = cluster_case.notebook(ns, name)
    body["metadata"]["annotations"] = {STOP: "2026-12-05T00:00:00Z"}
    return body


def _slice(ns: str, name: str, port: int) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-ready", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
            "ports": [{"name": f"http-{name}", "port": port, "protocol": "TCP"}]}


def _get(port: int, path: str, headers: dict, timeout: float) -> tuple[int, str, float]:
    """Status, content type and the time the answer's first byte came."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        first_byte = time.perf_counter()
        response.read()
        return response.status, response.getheader("Content-Type") or "", first_byte
    finally:
        connection.close()


class Kubelet:
    """Writes a ready endpoint for each Notebook the controller woke, and
    records when the API server accepted it."""

    def __init__(self, api: cluster_case.ApiClient, ns: str, names: list[str], upstream: int):
        self.api, self.ns, self.names, self.upstream = api, ns, set(names), upstream
        self.ready_at: dict[str, float] = {}
        self.error: str | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # Polls the list every 50 ms (a watch read through http.client
        # delivered some events tens of seconds late); what is timed starts
        # at the endpoint's write, so the polling delay is not in it.
        pool = concurrent.futures.ThreadPoolExecutor(8)
        pending: set[str] = set(self.names)
        try:
            while pending and not self.done.is_set():
                items = self.api.get_json(cluster_case.notebook_path(self.ns))["items"]
                for item in items:
                    name = item["metadata"]["name"]
                    if name in pending and STOP not in (item["metadata"].get("annotations") or {}):
                        pending.discard(name)
                        pool.submit(self._ready, name)
                time.sleep(0.05)
        except Exception as error:  # noqa: BLE001 - reported with the result
            self.error = f"the kubelet stand-in failed: {error}"
        pool.shutdown(wait=True)

    def _ready(self, name: str) -> None:
        try:
            self._post_slice(name)
        except Exception as error:  # noqa: BLE001 - reported with the result
            self.error = f"writing {name}'s endpoint: {error}"

    def _post_slice(self, name: str) -> None:
        self.api.post(f"/apis/discovery.k8s.io/v1/namespaces/{self.ns}/endpointslices", _slice(self.ns, name, self.upstream))
        self.ready_at[name] = time.perf_counter()


def run(root: Path, bins: Path, work: Path, count: int, tools: dict) -> dict:
    log = tools["log"]
    env = cluster_case.kube_env(root)
    api = cluster_case.fresh_control_plane(root, env, log)
    ns = "bench-wake"
    try:
        cluster_case.create_namespace(api, ns)
        names = [f"nb{i}" for i in range(count)]
        log(f"wake: {count} stopped notebooks")
        for name in names:
            api.post(cluster_case.notebook_path(ns), _stopped_notebook(ns, name))
        # The notebooks' server, where their endpoints point once "ready".
        upstream, upstream_port = tools["start_fake_notebook"](bins, work, "fake-wake-node", NODE_IP)
        stack = cluster_case.Stack(bins, work, "wake", ns, env, ["unused"], tools)
        try:
            return _measure(api, ns, names, stack, upstream_port, log)
        finally:
            stack.stop()
            upstream.stop()
    finally:
        # Free the machine for the next case.
        subprocess.run([str(root / "tests/kube/down"), "--quiet"], check=False, stdout=subprocess.DEVNULL)


def _measure(api: cluster_case.ApiClient, ns: str, names: list[str], stack: cluster_case.Stack, upstream: int,
             log) -> dict:
    port = int(stack.base.split(":")[2].split("/")[0])
    prefix = f"/notebook/{ns}/"
    # Every notebook routed and known as stopped (its phase reached the gateway).
    deadline = time.time() + 300
    for name in names:
        while True:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", f"{prefix}{name}/api/status")
            response = connection.getresponse()
            status, body = response.status, response.read()
            connection.close()
            if status == 503 and b"is stopped" in body:
                break
            if time.time() > deadline:
                raise RuntimeError(f"{name} never answered as stopped (last {status})")
            time.sleep(0.05)
    kubelet = Kubelet(api, ns, names, upstream)
    kubelet.thread.start()
    navigate = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
    api_request = {"Accept": "application/json"}

    def owner(name: str) -> tuple[str, int, str, int, float]:
        page, page_type, _ = _get(port, f"{prefix}{name}/lab", navigate, 30)
        held, _, first_byte = _get(port, f"{prefix}{name}/api/status", api_request, 120)
        return name, page, page_type, held, first_byte

    log(f"wake: {len(names)} owners come back at once")
    begun = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        outcomes = list(pool.map(owner, names))
    elapsed = time.perf_counter() - begun
    kubelet.done.set()
    kubelet.thread.join(timeout=30)
    overheads, lost, pages = [], 0, 0
    for name, page, page_type, held, first_byte in outcomes:
        pages += page == 503 and page_type.startswith("text/html")
        if held != 200:
            lost += 1
        elif name in kubelet.ready_at:
            overheads.append((first_byte - kubelet.ready_at[name]) * 1000)
    # From the owners' first requests to each endpoint: the wake itself
    # (gateway -> controller -> the Notebook's annotation -> the kubelet).
    woken_after = [(at - begun) * 1000 for at in kubelet.ready_at.values()]
    result = {"notebooks": len(names), "woken": len(kubelet.ready_at), "starting_pages": pages, "lost": lost,
              "all_served_s": round(elapsed, 2), "overhead": cluster_case.percentiles(overheads),
              "request_to_endpoint": cluster_case.percentiles(woken_after)}
    if kubelet.error or result["woken"] != len(names):
        result["error"] = (kubelet.error or "not every notebook was woken") + "; controller log:\n" + \
            stack.controller.log_path.read_text()[-3000:] + "\ngateway log:\n" + stack.gateway_log_tail()
    log(f"  woken {result['woken']}/{len(names)}, starting pages {pages}, lost {lost}, endpoint ready -> first byte "
        f"p50 {result['overhead']['p50_ms']} ms, p99 {result['overhead']['p99_ms']} ms, all served in {elapsed:.1f} s "
        f"(request -> endpoint ready p50 {result['request_to_endpoint']['p50_ms']} ms, max {result['request_to_endpoint']['max_ms']} ms)")
    return result

