"""The gateway under each allocator (`bench/run --case allocators`, issue #18).

The same release binary, the allocator chosen from outside: glibc as built
(two arenas, heap.rs), glibc with a larger per-thread cache
(GLIBC_TUNABLES), and mimalloc (also with freed pages decommitted) and
jemalloc preloaded (LD_PRELOAD of the distribution's libraries; a variant
whose library is not installed is skipped); and, measured alongside for the
fixed-rate p99, glibc with Pingora's work stealing off. Each variant is its
own gateway over the same routes, measured on everything an allocator moves:

- keep-alive rps (wrk, rounds interleaved, median) and CPU per request;
- fixed-rate p99 and CPU per request at the same rate;
- RSS per idle kernel websocket (portico-load ws-idle);
- RSS at 10,000 notebook routes (folder mode): after start-up, and its peak.
"""

from __future__ import annotations

import time
from pathlib import Path

LIB = Path("/usr/lib/x86_64-linux-gnu")
# name -> environment of the gateway process.
VARIANTS = {
    "glibc": {},
    "glibc-tcache": {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=1024"},
    "mimalloc": {"LD_PRELOAD": str(LIB / "libmimalloc.so.2")},
    # Freed pages decommitted (MADV_DONTNEED), not only reset (MADV_FREE,
    # which stays in RSS until the kernel needs the memory): mimalloc 2.0's
    # name for it, and 2.1's.
    "mimalloc-decommit": {"LD_PRELOAD": str(LIB / "libmimalloc.so.2"), "MIMALLOC_RESET_DECOMMITS": "1",
                          "MIMALLOC_PURGE_DECOMMITS": "1"},
    "jemalloc": {"LD_PRELOAD": str(LIB / "libjemalloc.so.2")},
    # Not an allocator, but measured the same way, for the fixed-rate p99:
    # one single-threaded runtime per worker instead of work stealing.
    "glibc-no-stealing": {"PORTICO_WORK_STEALING": "false"},
}


def available(tools) -> dict[str, dict]:
    found = {}
    for name, env in VARIANTS.items():
        preload = env.get("LD_PRELOAD")
        if preload and not Path(preload).exists():
            tools["log"](f"allocators: {preload} not installed; {name} skipped (apt-get install libmimalloc2.0 libjemalloc2)")
            continue
        found[name] = env
    return found


def run(t, load: Path, params: dict, tools) -> dict:
    log, wrk, cpu_seconds = tools["log"], tools["wrk"], tools["cpu_seconds"]
    variants = available(tools)
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
    glibc = results.get("glibc", {}).get("rps")
    results["ratios"] = {f"{v}/glibc": round(results[v]["rps"] / glibc, 3) if glibc else None for v in variants if v != "glibc"}
    return results


def stop(t, name: str) -> None:
    """Stops one gateway of the set (the others keep serving)."""
    for process in list(t.processes):
        if process.name == name:
            process.stop()
            t.processes.remove(process)
