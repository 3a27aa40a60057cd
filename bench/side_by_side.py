"""Portico and the minimal Pingora proxy loaded at the same time, at the
same fixed rate: issue #18's CPU-per-request target, measured so that the
machine's swings cancel out (`bench/run --case fixed_rate`).

Why side by side: on this machine one target's CPU per request moves by up
to +-10 us from one 8-second pass to the next (whatever else the host ran
then), more than the difference being measured, so passes one after the
other needed many rounds and still disagreed between runs (+5.2 and +11.2
us in session 13). Loaded at the same time, both proxies see the same
machine, and the per-round differences stay within about +-1.5 us.

What it costs: both proxies, both load generators and the upstream share
the two cores, so each proxy runs with the other's caches beside it. CPU
per request is higher here than in a pass alone, and so is the difference
(a proxy that touches more memory loses more of it to the other): the
figure is the stricter of the two.

The start order alternates every round. CPU time is each thread's on-CPU
nanoseconds (`/proc/PID/task/*/schedstat`), not 10 ms ticks.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

PAIR = ("portico", "pingora")


def on_cpu_ns(pid: int) -> int:
    """Nanoseconds the process's threads have run, all of them."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            pass  # a thread that ended meanwhile
    return total


def median(values: list[float]) -> float | None:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


def one_round(t, load: Path, order: tuple[str, ...], args_for, seconds: int) -> dict:
    """Every target in `order` loaded at once; CPU us per request and the
    load report's request count, p99 and errors per target."""
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as work:
        reports = {target: Path(work) / f"{target}.json" for target in order}
        before = {target: on_cpu_ns(t.pids[target]) for target in order}
        running = {
            target: subprocess.Popen([str(load), *args_for(target), "--json", str(reports[target])],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for target in order
        }
        try:
            finished = {target: process.communicate(timeout=seconds + 60) for target, process in running.items()}
        finally:
            # A load that failed or hung must not run on into the next case.
            for process in running.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        after = {target: on_cpu_ns(t.pids[target]) for target in order}
        results = {}
        for target in order:
            if running[target].returncode != 0:
                raise RuntimeError(f"portico-load against {target} exited {running[target].returncode}: "
                                   f"{finished[target][1].strip()[-500:]}")
            report = json.loads(reports[target].read_text())
            request = {o["name"]: o for o in report.get("operations", [])}.get("request", {})
            count = request.get("count", 0)
            results[target] = {
                "cpu_us_per_req": round((after[target] - before[target]) / 1000 / count, 2) if count else None,
                "count": count,
                "p99_ms": request.get("latency_ms", {}).get("p99"),
                "errors": report.get("error_total", 0),
            }
    return results


def run(t, load: Path, args_for, seconds: int, rounds: int, log) -> dict:
    """`rounds` rounds of Portico and Pingora loaded together;
    `args_for(target)` is each one's portico-load command line."""
    per_target: dict[str, dict[str, list]] = {target: {"cpu_us_per_req": [], "p99_ms": []} for target in PAIR}
    differences: list[float] = []
    errors = {target: 0 for target in PAIR}
    for number in range(rounds):
        order = PAIR if number % 2 == 0 else tuple(reversed(PAIR))
        results = one_round(t, load, order, args_for, seconds)
        for target in PAIR:
            per_target[target]["cpu_us_per_req"].append(results[target]["cpu_us_per_req"])
            per_target[target]["p99_ms"].append(results[target]["p99_ms"])
            errors[target] += results[target]["errors"]
        portico, pingora = results["portico"]["cpu_us_per_req"], results["pingora"]["cpu_us_per_req"]
        if portico is not None and pingora is not None:
            differences.append(round(portico - pingora, 2))
        log(f"side by side, round {number + 1}/{rounds}: CPU portico {portico} vs pingora {pingora} us/req")
    summary = {
        target: {"cpu_us_per_req": median([x for x in v["cpu_us_per_req"] if x is not None]), "rounds": v,
                 "errors": errors[target]}
        for target, v in per_target.items()
    }
    summary["differences"] = differences
    summary["cpu_us_per_req portico - pingora"] = median(differences)
    return summary
