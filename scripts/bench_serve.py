"""Load test of `python -m mt.serve`: K concurrent clients against a server on 127.0.0.1, with
request batching on and then off, in one run.

    python scripts/bench_serve.py --checkpoint CKPT [--clients 8] [--requests 400] [--seconds 60]

Each mode starts its own server process (on a free port of 127.0.0.1; traffic never leaves this
machine), warms it up, then lets K clients send `{"text": ...}` requests one after another until
`--requests` have been sent or `--seconds` have passed. Reports requests/s, p50/p99 latency,
errors (must be 0), the server's decoding batches and its resident memory before and after;
prints a table and writes JSON (default outputs/bench/serve.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from mt.device import cpu_info
from mt.paths import PROJECT_ROOT

HOST = "127.0.0.1"  # fixed: this script only ever talks to this machine
DEFAULT_TEXTS = PROJECT_ROOT / "tests" / "fixtures" / "toy" / "test.en"


@dataclass
class Load:
    clients: int
    requests: int  # at most, over all clients
    seconds: float  # at most
    beam: int | None


@dataclass
class Outcome:
    batching: bool
    requests: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    requests_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_batch_requests: float = 0.0  # requests per decoding batch, from the server's /health
    batches: int = 0
    rss_before_mib: float | None = None
    rss_after_mib: float | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def start_server(checkpoint: str, port: int, batching: bool, clients: int, threads: int, log) -> subprocess.Popen:
    command = [sys.executable, "-m", "mt.serve", "--checkpoint", checkpoint, "--host", HOST, "--port", str(port)]
    command += ["--log-level", "warning", "--queue-size", str(max(64, 2 * clients)), "--threads", str(threads)]
    if not batching:
        command.append("--no-batching")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)  # a file: a pipe could fill up


def wait_healthy(base: str, server: subprocess.Popen, log, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise SystemExit(f"bench_serve: the server exited: {log.read().decode(errors='replace').strip()}")
        try:
            return httpx.get(base + "health", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("bench_serve: the server did not answer /health in time")


def run_clients(base: str, texts: list[str], load: Load) -> tuple[list[float], list[str], float]:
    """K threads, each sending one request at a time; returns latencies (ms), errors, wall seconds."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    sent = 0
    deadline = time.monotonic() + load.seconds

    def next_index() -> int | None:
        nonlocal sent
        with lock:
            if sent >= load.requests or time.monotonic() >= deadline:
                return None
            sent += 1
            return sent - 1

    def client() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while (k := next_index()) is not None:
                body: dict = {"text": texts[k % len(texts)]}
                if load.beam is not None:
                    body["beam"] = load.beam
                start = time.perf_counter()
                try:
                    response = http.post("translate", json=body)
                    ok = response.status_code == 200 and response.json()["results"][0]["translation"]
                    problem = "" if ok else f"HTTP {response.status_code}: {response.text[:120]}"
                except (httpx.HTTPError, ValueError, KeyError) as err:
                    problem = f"{type(err).__name__}: {err}"
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    if problem:
                        errors.append(problem)
                    else:
                        latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(load.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(checkpoint: str, texts: list[str], load: Load, batching: bool, threads: int) -> tuple[Outcome, dict]:
    port = free_port()
    base = f"http://{HOST}:{port}/"
    log = tempfile.TemporaryFile()
    server = start_server(checkpoint, port, batching, load.clients, threads, log)
    try:
        health = wait_healthy(base, server, log)
        for text in texts[:5]:  # warm-up: first calls allocate
            httpx.post(base + "translate", json={"text": text}, timeout=60)
        outcome = Outcome(batching, rss_before_mib=rss_mib(server.pid))
        before = httpx.get(base + "health", timeout=5).json()["batching"]
        latencies, errors, seconds = run_clients(base, texts, load)
        after = httpx.get(base + "health", timeout=5).json()["batching"]
        outcome.rss_after_mib = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    batches = after["batches"] - before["batches"]
    outcome.requests = len(latencies) + len(errors)
    outcome.errors, outcome.error_examples = len(errors), errors[:3]
    outcome.seconds = round(seconds, 2)
    outcome.requests_per_s = round(len(latencies) / seconds, 2) if seconds else 0.0
    outcome.p50_ms = round(percentile(latencies, 0.50), 1)
    outcome.p99_ms = round(percentile(latencies, 0.99), 1)
    outcome.batches = batches
    outcome.mean_batch_requests = round((after["requests"] - before["requests"]) / batches, 2) if batches else 0.0
    return outcome, health


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="the model to serve")
    p.add_argument("--texts", default=str(DEFAULT_TEXTS), help="sentences to send, one per line")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    p.add_argument("--requests", type=int, default=400, help="requests per mode, at most (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=60, help="seconds per mode, at most (default: %(default)s)")
    p.add_argument("--beam", type=int, help="beam size per request (default: the server's)")
    p.add_argument("--threads", type=int, default=0, help="the server's CPU threads (0 = torch's default)")
    p.add_argument("--json", default="outputs/bench/serve.json")
    args = p.parse_args()
    if not 1 <= args.clients <= 256 or args.requests < 1 or not 0 < args.seconds <= 3600:
        p.error("--clients must be in [1, 256], --requests >= 1, --seconds in (0, 3600]")
    texts = [line.strip() for line in Path(args.texts).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        p.error(f"no sentences in {args.texts}")
    load = Load(args.clients, args.requests, args.seconds, args.beam)

    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    runs, health = {}, {}
    for batching in (True, False):
        name = "batching" if batching else "no_batching"
        outcome, health = measure(args.checkpoint, texts, load, batching, args.threads)
        runs[name] = asdict(outcome)
        print(
            f"{name}: {outcome.requests} requests, {outcome.errors} errors, {outcome.requests_per_s} req/s", flush=True
        )

    result = {
        "machine": {
            "cpu": cpu_info()["cpu"],
            "cores": os.cpu_count(),
            "load_average_1m_before": load_before,
            "python": platform.python_version(),
        },
        "checkpoint": args.checkpoint,
        "model": {k: health.get(k) for k in ("src_lang", "tgt_lang", "model", "defaults")},
        "load": asdict(load),
        "texts": args.texts,
        "runs": runs,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    machine = result["machine"]
    print(f"\n{machine['cpu']}, {machine['cores']} cores (load {load_before} before); {load.clients} clients")
    header = f"{'mode':<12} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
    print(header + f" {'req/batch':>9} {'RSS MiB before -> after':>24}")
    for name, r in runs.items():
        memory = f"{r['rss_before_mib']} -> {r['rss_after_mib']}"
        print(
            f"{name:<12} {r['requests']:>8} {r['errors']:>6} {r['requests_per_s']:>7} {r['p50_ms']:>7} "
            f"{r['p99_ms']:>7} {r['mean_batch_requests']:>9} {memory:>24}"
        )
    print(f"written to {out}")
    if any(r["errors"] for r in runs.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
