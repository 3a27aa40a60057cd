"""Cluster-mode route propagation for bench/run.

A Notebook POSTed to the real API server (tests/kube) -> the controller
reconciles it into a VirtualService -> the route index -> a discovery delta
-> the gateway -> the first 200 through it. Measured with N existing
notebook routes (VirtualServices created up front, as the notebooks' would
be), while a steady load on an existing route counts errors.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable


def _post(base: str, path: str, body: dict) -> None:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def _vs(ns: str, name: str) -> dict:
    prefix = f"/notebook/{ns}/{name}/"
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": f"notebook-{ns}-{name}", "namespace": ns},
            "spec": {"hosts": ["*"], "gateways": [f"{ns}/kubeflow-gateway"],
                     "http": [{"match": [{"uri": {"prefix": prefix}}], "rewrite": {"uri": prefix},
                               "route": [{"destination": {"host": f"{name}.{ns}.svc.cluster.local", "port": {"number": 80}}}],
                               "timeout": "300s"}]}}


def _notebook(ns: str, name: str) -> dict:
    return {"apiVersion": "kubeflow.org/v1", "kind": "Notebook", "metadata": {"name": name, "namespace": ns},
            "spec": {"template": {"spec": {"containers": [{"name": name, "image": "kubeflownotebookswg/jupyter-scipy"}]}}}}


def run(root: Path, bins: Path, work: Path, existing_counts: list[int], samples: int, tools: dict) -> dict:
    """tools: bench/run's helpers (log, free_port, wait_http, status_of, rss_kib, Process,
    summarize_latency, start_fake_notebook, start_controller)."""
    log: Callable = tools["log"]
    free_port: Callable = tools["free_port"]
    Process = tools["Process"]
    subprocess.run([str(root / "tests/kube/up")], check=True, stdout=subprocess.DEVNULL)
    kubeconfig = str(root / "target/kube/kubeconfig")
    env = {**os.environ, "KUBECONFIG": kubeconfig, "RUST_LOG": "warn"}
    for key in list(env):
        if key.startswith("PORTICO_") or key.startswith("ISTIO_"):
            env.pop(key)
    subprocess.run(["kubectl", "apply", "-k", str(root / "manifests/crds")], env=env, check=True, stdout=subprocess.DEVNULL)
    proxy_port = free_port()
    proxy = Process("kubectl-proxy", ["kubectl", "proxy", "--port", str(proxy_port)], work, env=env)
    api = f"http://127.0.0.1:{proxy_port}"
    tools["wait_http"](api + "/readyz")
    results = {}
    try:
        for count in existing_counts:
            results[str(count)] = _one(bins, work, count, samples, env, api, tools)
    finally:
        proxy.stop()
    return results


def _one(bins: Path, work: Path, count: int, samples: int, env: dict, api: str, tools: dict) -> dict:
    log, free_port, Process = tools["log"], tools["free_port"], tools["Process"]
    ns = f"bench-cluster-{count}-{int(time.time())}"
    _post(api, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    _post(api, f"/apis/networking.istio.io/v1/namespaces/{ns}/gateways", {
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "kubeflow-gateway", "namespace": ns},
        "spec": {"selector": {"istio": "ingressgateway"},
                 "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}})
    log(f"cluster propagation: creating {count} notebook VirtualServices in {ns}")
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: _post(api, f"/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices", _vs(ns, f"nb{i}")),
                      range(count)))
    log(f"  created in {time.perf_counter() - started:.1f} s")
    processes = []
    try:
        up, upstream = tools["start_fake_notebook"](bins, work, f"fake-{count}")
        processes.append(up)
        controller, controller_ports = tools["start_controller"](
            bins, work, f"controller-{count}", ns, {**env, "ISTIO_GATEWAY": f"{ns}/kubeflow-gateway"})
        processes.append(controller)
        discovery = controller_ports["discovery"]
        port, admin, health, gmetrics = free_port(), free_port(), free_port(), free_port()
        names = [f"new{i}" for i in range(samples)] + ["nb0"]
        resolves = ",".join(f"{n}.{ns}.svc.cluster.local:80=127.0.0.1:{upstream}" for n in names)
        gateway = Process(f"gateway-{count}", [
            str(bins / "portico-gateway"), "--discovery", f"http://127.0.0.1:{discovery}", "--bind", f"80=127.0.0.1:{port}",
            "--admin", f"127.0.0.1:{admin}", "--health", f"127.0.0.1:{health}", "--metrics", f"127.0.0.1:{gmetrics}",
            "--threads", "2", "--access-log", "false", "--resolve", resolves,
            "--upgrade-sock", str(work / f"upgrade-{count}.sock")], work, env=env)
        processes.append(gateway)
        tools["wait_http"](f"http://127.0.0.1:{health}/healthz/ready", timeout=300)
        base = f"http://127.0.0.1:{port}/notebook/{ns}/"
        # The first full state holds every existing route.
        deadline = time.time() + 300
        while time.time() < deadline:
            if tools["status_of"](base + "nb0/api/status") == 200:
                break
            time.sleep(0.05)
        churn_json = work / f"cluster-churn-{count}.json"
        background_seconds = 10 + samples
        background = subprocess.Popen(
            [str(bins / "portico-load"), "http", "--url", base + "nb0/api/status", "--connections", "4",
             "--duration", f"{background_seconds}s", "--rate", "200", "--json", str(churn_json)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        latencies = []
        for i in range(samples):
            name = f"new{i}"
            url = base + f"{name}/api/status"
            begun = time.perf_counter()
            _post(api, f"/apis/kubeflow.org/v1/namespaces/{ns}/notebooks", _notebook(ns, name))
            while tools["status_of"](url) != 200:
                if time.perf_counter() - begun > 30:
                    raise RuntimeError(f"{name} not routed after 30 s; gateway log:\n" + gateway.log_path.read_text()[-3000:])
                time.sleep(0.001)
            latencies.append((time.perf_counter() - begun) * 1000)
        background.wait(timeout=background_seconds + 60)
        churn = json.loads(churn_json.read_text()) if churn_json.exists() else {}
        errors = tools["summarize_latency"](churn, "request")["errors"] if churn else None
        latencies.sort()
        result = {
            "existing_notebooks": count, "samples": len(latencies),
            "p50_ms": round(latencies[len(latencies) // 2], 1),
            "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 1),
            "max_ms": round(latencies[-1], 1),
            "errors_on_existing_routes": errors,
            "controller_rss_kib": tools["rss_kib"](controller.pid),
            "gateway_rss_kib": tools["rss_kib"](gateway.pid),
        }
        log(f"  {count} existing: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, errors {errors}, "
            f"controller RSS {result['controller_rss_kib'] // 1024} MiB, gateway RSS {result['gateway_rss_kib'] // 1024} MiB")
        return result
    finally:
        for process in reversed(processes):
            process.stop()
