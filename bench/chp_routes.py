#!/usr/bin/env python3
"""JupyterHub's proxy API under load: Portico's `chp` mode or CHP itself.

    target/venv/bin/python bench/chp_routes.py --proxy target/release/portico-gateway [--prefill 10000]
    target/venv/bin/python bench/chp_routes.py --proxy target/chp/node_modules/.bin/configurable-http-proxy
    target/venv/bin/python bench/chp_routes.py --cluster target/release [--prefill 1000]

(`bench/run --case jupyterhub` installs CHP there from bench/chp's lock, and
measures the same adds next to the traffic figures.)

Measures, against one proxy process started here (with a local upstream
that answers 200 to anything):

* the time of `POST /api/routes/<path>` with `--prefill` routes already there
  (what JupyterHub waits for on each spawn, and at start-up for every user);
* route add -> first 200: a new route is posted and `GET <route>/` is polled
  until the proxy forwards it (traefik-proxy's published method), one add at
  a time and 50 at once;
* the proxy's resident memory with all the routes in place.

Prints one JSON object. Portico is run as `<binary> chp`; anything else is
run as CHP (same flags).

`--cluster BINDIR`: cluster mode instead. The test control plane
(tests/kube/up; run the bench under `flock /tmp/portico-kube.lock` as the
tests are, and tests/kube/down after), the ChpRoute CRD, a namespace of its
own, BINDIR's `portico-controller --chp-api` serving the API and one
`portico-gateway --discovery` serving JupyterHub's port: add -> first 200 is
then POST to the controller (a ChpRoute written to the API server, watched
back by the route index, pushed over discovery) -> the first 200 through the
gateway. The RSS figures are the gateway's.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
from aiohttp import web

TOKEN = "bench-token"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {
        "n": len(ordered),
        "p50_ms": round(pick(0.50), 3),
        "p90_ms": round(pick(0.90), 3),
        "p99_ms": round(pick(0.99), 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


async def start_upstream() -> tuple[web.AppRunner, int]:
    async def ok(_request):
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def post_route(session, api: str, path: str, target: str) -> float:
    started = time.perf_counter()
    async with session.post(f"{api}/api/routes{path}", json={"target": target, "jupyterhub": True}) as response:
        await response.read()
        if response.status != 201:
            raise RuntimeError(f"POST {path}: {response.status}")
    return (time.perf_counter() - started) * 1000


async def add_then_first_200(session, api: str, public: str, path: str, target: str) -> float:
    started = time.perf_counter()
    await post_route(session, api, path, target)
    while True:
        async with session.get(f"{public}{path}/") as response:
            await response.read()
            if response.status == 200:
                return (time.perf_counter() - started) * 1000
        if time.perf_counter() - started > 30:
            raise RuntimeError(f"{path}: no 200 within 30 s")


def wait_http_200(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


class Cluster:
    """The controller serving the proxy API on the test control plane, and
    one cluster-mode gateway serving JupyterHub's port."""

    def __init__(self, bins: Path):
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTICO_", "ISTIO_"))}
        self.env.update(KUBECONFIG=str(ROOT / "target/kube/kubeconfig"), RUST_LOG="error", CONFIGPROXY_AUTH_TOKEN=TOKEN)
        subprocess.run([str(ROOT / "tests/kube/up")], check=True, stdout=subprocess.DEVNULL)
        self.kubectl("apply", "-k", str(ROOT / "manifests/crds"))
        self.kubectl("wait", "--for", "condition=established", "--timeout=60s", "crd/chproutes.proxy.portico.dev")
        self.namespace = f"bench-chp-{os.getpid()}"
        self.kubectl("create", "namespace", self.namespace)
        self.processes = []
        api, discovery, metrics = free_port(), free_port(), free_port()
        self.start([str(bins / "portico-controller"), "--chp-api", f"127.0.0.1:{api}", "--chp-port", "8000",
                    "--watch-namespace", self.namespace, "--namespace", self.namespace, "--ca", "false",
                    "--metrics", f"127.0.0.1:{metrics}", "--discovery", f"127.0.0.1:{discovery}"])
        wait_http_200(f"http://127.0.0.1:{metrics}/readyz")
        port, admin, health, gateway_metrics = free_port(), free_port(), free_port(), free_port()
        self.gateway = self.start([
            str(bins / "portico-gateway"), "--discovery", f"http://127.0.0.1:{discovery}",
            "--bind", f"8000=127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}", "--health", f"127.0.0.1:{health}",
            "--metrics", f"127.0.0.1:{gateway_metrics}", "--access-log", "false",
            "--upgrade-sock", f"/tmp/portico-bench-chp-{os.getpid()}.sock"])
        wait_http_200(f"http://127.0.0.1:{health}/healthz/ready")
        self.api, self.public = f"http://127.0.0.1:{api}", f"http://127.0.0.1:{port}"

    def kubectl(self, *args: str) -> None:
        subprocess.run(["kubectl", *args], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def start(self, command: list[str]) -> subprocess.Popen:
        # CHP_BENCH_LOG_DIR: keep each process's log there (RUST_LOG as set).
        log_dir = os.environ.get("CHP_BENCH_LOG_DIR")
        output = open(Path(log_dir) / f"{Path(command[0]).name}.log", "w") if log_dir else subprocess.DEVNULL
        env = dict(self.env, RUST_LOG=os.environ.get("RUST_LOG", "error")) if log_dir else self.env
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            process.wait(timeout=10)
        self.kubectl("delete", "namespace", self.namespace, "--wait=false")


async def measure(args) -> dict:
    upstream, upstream_port = await start_upstream()
    target = f"http://127.0.0.1:{upstream_port}"
    cluster = None
    if args.cluster:
        cluster = Cluster(Path(args.cluster))
        proxy, api, public = cluster.gateway, cluster.api, cluster.public
        label = f"{args.cluster}/portico-controller --chp-api + portico-gateway --discovery"
    else:
        port, api_port = free_port(), free_port()
        command = [args.proxy]
        if os.path.basename(args.proxy).startswith("portico"):
            command.append("chp")
        command += ["--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1", "--api-port", str(api_port)]
        command += ["--log-level", "error"]
        env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=TOKEN, RUST_LOG="error")
        proxy = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        label = " ".join(command[: command.index("--ip")])
        api, public = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {TOKEN}"}
    try:
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            for _ in range(200):
                try:
                    async with session.get(f"{api}/api/routes") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            idle_rss = rss_kib(proxy.pid)
            prefill = [await post_route(session, api, f"/user/pre{i}", target) for i in range(args.prefill)]
            alone = [
                await add_then_first_200(session, api, public, f"/user/one{i}", target) for i in range(args.adds)
            ]
            together = []
            for batch in range(args.adds // 50 or 1):
                together += await asyncio.gather(
                    *(add_then_first_200(session, api, public, f"/user/b{batch}x{i}", target) for i in range(50))
                )
            return {
                "proxy": label,
                "routes": args.prefill + len(alone) + len(together),
                "post_route_with_prefill": percentiles(prefill[-1000:]) if prefill else None,
                "add_to_first_200_concurrency_1": percentiles(alone),
                "add_to_first_200_concurrency_50": percentiles(together),
                "rss_kib_idle": idle_rss,
                "rss_kib_with_routes": rss_kib(proxy.pid),
            }
    finally:
        if cluster:
            cluster.stop()
        else:
            proxy.terminate()
            proxy.wait(timeout=10)
        await upstream.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--proxy", help="portico-gateway, or CHP's configurable-http-proxy")
    mode.add_argument("--cluster", metavar="BINDIR", help="cluster mode with BINDIR's portico-controller and portico-gateway")
    parser.add_argument("--prefill", type=int, help="routes added before measuring (10000; 1000 in cluster mode)")
    parser.add_argument("--adds", type=int, default=200, help="routes measured at concurrency 1 (and 50)")
    args = parser.parse_args()
    if args.prefill is None:
        args.prefill = 1000 if args.cluster else 10_000
    print(json.dumps(asyncio.run(measure(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
