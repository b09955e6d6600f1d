"""pretrain.serve throughput and latency: batched decoding against generating one by one.

    python bench/serve.py [--model runs/demo-hf] [--requests 64] [--max-tokens 64]
        [--clients 1 8 32] [--max-batch-size 32] [--batch-wait-ms 10] [--loop-threads 1]
        [--rounds 2]

MODEL is `make demo`'s export (runs/demo-hf) by default; when it is missing, the tiny news model
tests/test_serve.py serves is trained and exported to a temporary directory (--model PATH
serves any export or checkpoint). The same --requests completions (prompts cycled from a fixed
list, every other one sampled with temperature 0.8, top_p 0.95 and its own seed, the others
greedy; max_tokens each) are measured two ways, on CPU:

1. `bench: serve_loop`: in this process, one after another with pretrain.serve's single-sequence
   decoding (`complete_one`, pretrain.generate's KV-cache path), torch on --loop-threads threads
   (default 1: what a replica with --cpus-per-replica 1 gets, as Ray sets OMP_NUM_THREADS).
2. `bench: serve`: `python -m pretrain.serve MODEL` in a child process (its own local Ray, one
   replica), sent the requests over real HTTP on 127.0.0.1 by C concurrent clients (a thread
   pool of C threads, each sending its next request when its answer comes), for each C of
   --clients.

Both run while the server is up (the loop while it idles), in --rounds interleaved rounds (loop,
then each C), so that load from other processes on the machine falls on both; each line reports
its fastest round.

Each line has requests/s (requests / wall seconds) and the p50/p95 latency of one request (for
the loop: the time of one generation); `equal` says whether every answer's text and finish
reason equal the loop's. A last line (`bench: serve_summary`) gives the speed-up of each
concurrency over the loop and whether batching wins at 8 and 32 clients.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEMO_MODEL = ROOT / "runs" / "demo-hf"
PROMPTS = ["The city council", "Police say", "The prime minister said on Tuesday that",
           "Scientists have found", "In the first half of the match,", "The company reported",
           "Australian troops", "Residents of the town"]
START_TIMEOUT_S = 300


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def line(bench: str, clients: int | None, latencies: list[float], wall: float,
         equal: bool | None = None) -> dict:
    record = {"bench": bench, "clients": clients, "requests": len(latencies),
              "requests_per_s": round(len(latencies) / wall, 2),
              "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
              "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
              "wall_s": round(wall, 2)}
    if equal is not None:
        record["equal"] = equal
    print(json.dumps(record), flush=True)
    return record


def bodies(count: int, max_tokens: int) -> list[dict]:
    out = []
    for i in range(count):
        body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens}
        if i % 2:
            body.update(temperature=0.8, top_p=0.95, seed=1000 + i)
        else:
            body.update(temperature=0)
        out.append(body)
    return out


def tiny_model(out: Path) -> Path:
    from tests.tiny_lm import news_tokenizer, tiny_export

    return tiny_export(out / "hf", news_tokenizer(out / "tok"), steps=40)


def run_loop(model_path: Path, requests: list[dict], threads: int) -> tuple[dict, list]:
    """The requests one after another in this process: (its line's fields, the answers)."""
    import torch

    from pretrain.inference import load_model
    from pretrain.serve import complete_one, parse_request

    torch.set_num_threads(threads)
    loaded = load_model(model_path, device="cpu")
    complete_one(loaded.model, loaded.tokenizer, "warm up", parse_request(
        {"prompt": "warm up", "max_tokens": 4}, loaded.tokenizer, loaded.model).sampling(0))
    latencies, answers = [], []
    started = time.perf_counter()
    for body in requests:
        request = parse_request(body, loaded.tokenizer, loaded.model)
        began = time.perf_counter()
        text, reason, _ = complete_one(loaded.model, loaded.tokenizer, request.prompt,
                                       request.sampling(0), request.stop)
        latencies.append(time.perf_counter() - began)
        answers.append((text, reason))
    return {"latencies": latencies, "wall": time.perf_counter() - started}, answers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict) -> tuple[float, tuple[str, str]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as answer:
        choice = json.loads(answer.read())["choices"][0]
    return time.perf_counter() - began, (choice["text"], choice["finish_reason"])


def start_server(model_path: Path, port: int, args: argparse.Namespace,
                 log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pretrain.serve", str(model_path), "--port", str(port),
             "--replicas", "1", "--cpus-per-replica", str(args.cpus_per_replica),
             "--max-batch-size", str(args.max_batch_size),
             "--batch-wait-ms", str(args.batch_wait_ms)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while "serving " not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return process


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help=f"export or checkpoint (default: {DEMO_MODEL.relative_to(ROOT)}, "
                             "else a tiny model trained here)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--cpus-per-replica", type=float, default=1.0)
    parser.add_argument("--loop-threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model_path = args.model
        if model_path is None:
            model_path = DEMO_MODEL if (DEMO_MODEL / "config.json").is_file() \
                else tiny_model(Path(tmp))
        print(json.dumps({"bench": "serve_setup", "model": str(model_path),
                          "max_tokens": args.max_tokens,
                          "max_batch_size": args.max_batch_size,
                          "batch_wait_ms": args.batch_wait_ms,
                          "cpus_per_replica": args.cpus_per_replica,
                          "loop_threads": args.loop_threads, "rounds": args.rounds}),
              flush=True)
        requests = bodies(args.requests, args.max_tokens)
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1/completions"
        process = start_server(model_path, port, args, Path(tmp) / "server.log")
        loops, served = [], {clients: [] for clients in args.clients}
        try:
            for body in requests[:4]:  # warm up: the replica's first forward passes
                post(url, body)
            for _ in range(args.rounds):  # interleaved, so load from elsewhere hits both
                loop, expected = run_loop(model_path, requests, args.loop_threads)
                loops.append(loop)
                for clients in args.clients:
                    started = time.perf_counter()
                    with ThreadPoolExecutor(clients) as pool:
                        answers = list(pool.map(lambda body: post(url, body), requests))
                    served[clients].append({
                        "latencies": [t for t, _ in answers],
                        "wall": time.perf_counter() - started,
                        "equal": [answer for _, answer in answers] == expected})
        finally:
            stop_server(process)

        results = {}
        for clients, runs in served.items():
            best = min(runs, key=lambda run: run["wall"])
            results[clients] = line("serve", clients, best["latencies"], best["wall"],
                                    all(run["equal"] for run in runs))
        best = min(loops, key=lambda run: run["wall"])
        looped = line("serve_loop", None, best["latencies"], best["wall"])
        speedups = {str(c): round(r["requests_per_s"] / looped["requests_per_s"], 2)
                    for c, r in results.items()}
        summary = {"bench": "serve_summary", "loop_requests_per_s": looped["requests_per_s"],
                   "speedup_over_loop": speedups,
                   "all_equal_to_loop": all(r["equal"] for r in results.values())}
        for clients in (8, 32):
            if clients in results:
                summary[f"batching_wins_at_{clients}"] = \
                    results[clients]["requests_per_s"] > looped["requests_per_s"]
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
