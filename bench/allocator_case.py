"""The gateway's heap settings side by side (`bench/run --case allocators`,
issue #18).

The gateway links mimalloc as its global allocator (gateway/src/heap.rs), so
an allocator can no longer be preloaded from outside: what varies here is
mimalloc's own settings, from the environment. As built: freed pages handed
back at once (purge delay 0), no huge pages. Against it: the purge delayed
10 ms and 1 s (mimalloc's default), and, not an allocator setting but
measured the same way for the fixed-rate p99, Pingora's work stealing off.
(glibc, tuned glibc, mimalloc 2.0 and jemalloc were compared here until
session 13: bench/RESULTS.md.) Each variant is its own gateway over the same
routes, measured on everything the heap moves:

- keep-alive rps (wrk, rounds interleaved, median) and CPU per request;
- fixed-rate p99 and CPU per request at the same rate;
- RSS per idle kernel websocket (portico-load ws-idle);
- RSS at 10,000 notebook routes (folder mode): after start-up, and its peak.
"""

from __future__ import annotations

import time
from pathlib import Path

# The variant the others are compared with.
BASE = "mimalloc"
# name -> environment of the gateway process.
VARIANTS = {
    BASE: {},
    "mimalloc-purge-10ms": {"MIMALLOC_PURGE_DELAY": "10"},
    "mimalloc-purge-1s": {"MIMALLOC_PURGE_DELAY": "1000"},
    "no-stealing": {"PORTICO_WORK_STEALING": "false"},
}


def run(t, load: Path, params: dict, tools) -> dict:
    log, wrk, cpu_seconds = tools["log"], tools["wrk"], tools["cpu_seconds"]
    variants = VARIANTS
    names = {variant: f"portico-{variant}" for variant in variants}
    for variant, env in variants.items():
        t.start_portico(names[variant], t.bins, env=env)
    results: dict[str, dict] = {v: {"rps_rounds": [], "keepalive_cpu_us_per_req": []} for v in variants}
    for _ in range(params["rounds"]):
        for variant in variants:
            url = t.url(names[variant], t.names[-1]) + "api/status"
            wrk(url, 1)
            before = cpu_seconds(t.pids[names[variant]])
            r = wrk(url, params["seconds"])
            cpu = cpu_seconds(t.pids[names[variant]]) - before
            results[variant]["rps_rounds"].append(r["rps"])
            results[variant]["keepalive_cpu_us_per_req"].append(tools["cpu_us_per_request"](cpu, r["requests"]))
    for variant in variants:
        url = t.url(names[variant], t.names[-1]) + "api/status"
        before = cpu_seconds(t.pids[names[variant]])
        r = tools["summarize_latency"](tools["load_on"](names[variant], load, tools["fixed_rate_args"](
            url, params["seconds"], params["rate"]), params["seconds"] + 60), "request")
        cpu = cpu_seconds(t.pids[names[variant]]) - before
        ordered = sorted(results[variant]["rps_rounds"])
        results[variant].update({"rps": ordered[len(ordered) // 2], "fixed_rate_p99_ms": r["p99_ms"],
                                 "fixed_rate_p50_ms": r["p50_ms"], "fixed_rate_errors": r.get("errors", 0),
                                 "fixed_rate_cpu_us_per_req": tools["cpu_us_per_request"](cpu, r["count"])})
    for variant in variants:
        target = names[variant]
        pid_args = [arg for pid in tools["tree_pids"](t.pids[target]) for arg in ("--pid", str(pid))]
        r = tools["load_on"](target, load, ["ws-idle", "--base", t.url(target, t.names[-1]), "--count",
                                            str(params["websockets"]), *pid_args, "--hold", "5s"], 600)
        per_process = [m.get("per_connection_kib") for m in (r.get("details", {}).get("memory") or [])]
        results[variant]["websocket_kib"] = round(sum(p for p in per_process if p is not None), 1) if per_process else None
        results[variant]["websocket_errors"] = r.get("error_total", 0)
    scale_dir = t.work / "allocators-scale"
    tools["write_portico_config"](scale_dir, tools["notebook_names"](params["scale_routes"]), t.upstream_port)
    for variant, env in variants.items():
        name = f"{names[variant]}-scale"
        t.start_portico(name, t.bins, env=env, config_dir=scale_dir)
        url = t.url(name, f"nb-{params['scale_routes'] - 1:05d}") + "api/status"
        deadline = time.time() + 120
        while tools["status_of"](url) != 200 and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # the folder watcher's first reload, then a trim
        results[variant]["scale_rss_kib"] = tools["rss_kib"](t.pids[name])
        results[variant]["scale_rss_peak_kib"] = tools["rss_peak_kib"](t.pids[name])
        stop(t, name)
    for variant in variants:
        r = results[variant]
        log(f"allocator {variant}: {r['rps']:.0f} rps (rounds {[round(x) for x in r['rps_rounds']]}), "
            f"keep-alive CPU {r['keepalive_cpu_us_per_req']} us/req; fixed rate p99 {r['fixed_rate_p99_ms']} ms, "
            f"CPU {r['fixed_rate_cpu_us_per_req']} us/req; {r['websocket_kib']} KiB per idle websocket; "
            f"{params['scale_routes']} routes RSS {r['scale_rss_kib'] // 1024} MiB, peak {r['scale_rss_peak_kib'] // 1024} MiB")
    base = results[BASE]["rps"]
    results["ratios"] = {f"{v}/{BASE}": round(results[v]["rps"] / base, 3) if base else None for v in variants if v != BASE}
    return results


def stop(t, name: str) -> None:
    """Stops one gateway of the set (the others keep serving)."""
    for process in list(t.processes):
        if process.name == name:
            process.stop()
            t.processes.remove(process)
