"""Benchmark the HTTP service on loopback (not a test).

Starts ``python -m serve.run`` with the given bundle on a free 127.0.0.1 port, then
drives bounded load with ``wrk`` when it is installed (Debian package ``wrk``), else
with a small multi-process Python client, and measures:

* ``/v1/score``: requests/s, p50/p90/p99 latency, errors, for ``--duration`` seconds;
* ``/v1/score/batch`` with 64 tickets: tickets/s and latency;
* RSS of the gunicorn master and of each worker (before and after a reload);
* reload under load: ``/v1/admin/reload`` twice (to a copy of the bundle under another
  version, then back) while ``/v1/score`` load runs; failed requests are counted.

Writes JSON to ``bench/results/serve.json`` (``--out``). Every phase is bounded by
``--duration``; the whole run by a hard cap. Only loopback is ever contacted.

    python bench/bench_serve.py --model models/default [--workers 2] [--duration 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ADMIN_KEY = "bench-admin-key"
MAX_DURATION = 60.0
FALLBACK_TEXTS = [
    "小区3号楼电梯停了，老人被困在里面半小时，物业电话打不通！",
    "本月话费账单多扣了30元，要求退还。",
    "快递五天了还没送到，物流信息一直不更新。",
    "家里宽带从早上开始完全断网，到现在也没人来修。",
    "营业厅工作人员态度很差，排队一个小时没人理。",
    "燃气表卡充值后还是没有气，家里没法做饭，请尽快处理。",
    "信用卡被盗刷了两笔，共5000元，我本人从未消费。",
    "酒店房间卫生很差，床单有污渍，要求退款。",
]


def load_texts(limit: int = 512) -> list[str]:
    """Real-looking complaint texts from datasets/raw (if present), else a built-in handful."""
    texts: list[str] = []
    for path in sorted((ROOT / "datasets" / "raw").glob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    text = json.loads(line).get("text")
                except ValueError:
                    continue
                if isinstance(text, str) and 0 < len(text) <= 2000:
                    texts.append(text)
                if len(texts) >= limit:
                    return texts
    return texts or FALLBACK_TEXTS


# -- the server ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: Path, workers: int, threads: int, workdir: Path):
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_") and k != "DATABASE_URL"}
        env.update({"TRIAGE_API_KEYS": f"{ADMIN_KEY}:admin", "TRIAGE_THREADS": str(threads),
                    "DATABASE_URL": f"sqlite:///{workdir / 'feedback.sqlite3'}", "TRIAGE_LOG_LEVEL": "WARNING",
                    "TRIAGE_RUNTIME_DIR": str(workdir / "runtime"),
                    "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
        self.log = open(workdir / "server.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "serve.run", "--model", str(model), "--host", HOST,
                                      "--port", str(self.port), "--workers", str(workers)],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def call(self, method: str, path: str, body=None, timeout: float = 60.0):
        data = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "X-API-Key": ADMIN_KEY})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait_ready(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                status, body = self.call("GET", "/readyz", timeout=1)
                if status == 200:
                    return body
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("server did not become ready")

    def rss_mb(self) -> dict:
        def rss(pid: int) -> float | None:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return round(int(line.split()[1]) / 1024, 1)
            except OSError:
                return None
            return None

        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        workers = sorted(int(p) for p in out.stdout.split())
        return {"master": rss(self.proc.pid), "workers": [rss(p) for p in workers]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


# -- load generators -------------------------------------------------------------------------------
def lua_long_string(s: str) -> str:
    level = 0
    while f"]{'=' * level}]" in s:
        level += 1
    return f"[{'=' * level}[{s}]{'=' * level}]"


def run_wrk(url: str, bodies: list[str], duration: float, connections: int, threads: int, workdir: Path) -> dict:
    """wrk with a Lua script that rotates request bodies and prints a JSON summary."""
    script = workdir / f"wrk-{time.monotonic_ns()}.lua"
    items = ",\n".join(lua_long_string(b) for b in bodies)
    script.write_text(f"""
local bodies = {{ {items} }}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "{ADMIN_KEY}"
request = function()
  i = (i % #bodies) + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format(
    'JSON{{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}},"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
""", "utf-8")
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
                          "--timeout", "10s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in out.stdout.splitlines() if x.startswith("JSON")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(line[4:])
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    return {"requests": raw["requests"], "seconds": round(seconds, 2), "rps": round(raw["requests"] / seconds, 1),
            "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
            "max_ms": raw["max_us"] / 1000, "errors": errors, "error_detail": raw["errors"]}


def _client_proc(port: int, path: str, bodies: list[bytes], deadline: float, queue) -> None:
    import http.client

    lat, errors, n = [], 0, 0
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    headers = {"Content-Type": "application/json", "X-API-Key": ADMIN_KEY}
    while time.time() < deadline:
        body = bodies[n % len(bodies)]
        n += 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
            continue
        lat.append(time.perf_counter() - t0)
    conn.close()
    queue.put((lat, errors))


def run_python(port: int, path: str, bodies: list[str], duration: float, connections: int) -> dict:
    """A bounded closed-loop client: ``connections`` processes, each one keep-alive connection."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    deadline = time.time() + duration
    encoded = [b.encode("utf-8") for b in bodies]
    procs = [ctx.Process(target=_client_proc, args=(port, path, encoded, deadline, queue))
             for _ in range(connections)]
    started = time.time()
    for p in procs:
        p.start()
    results = [queue.get(timeout=duration + 60) for _ in procs]
    for p in procs:
        p.join(10)
    seconds = time.time() - started
    lat = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 3) if lat else None

    return {"requests": len(lat) + errors, "seconds": round(seconds, 2), "rps": round(len(lat) / seconds, 1),
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0), "errors": errors}


# -- phases -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", "-m", default="models/default", help="bundle directory (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="gunicorn threads per worker (the service default)")
    p.add_argument("--duration", type=float, default=10.0, help=f"seconds per phase (max {MAX_DURATION:.0f})")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve.json"))
    args = p.parse_args(argv)
    model = Path(args.model)
    if not (model / "manifest.json").is_file():
        print(f"bench_serve: no bundle at {model} (build one with `make model`)", file=sys.stderr)
        return 2
    duration = min(max(args.duration, 1.0), MAX_DURATION)
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    if args.client == "wrk" and not shutil.which("wrk"):
        print("bench_serve: wrk is not installed", file=sys.stderr)
        return 2

    texts = load_texts()
    score_bodies = [json.dumps({"text": t}, ensure_ascii=False) for t in texts[:256]]
    batch_bodies = [json.dumps({"tickets": [{"id": str(k), "text": texts[(i * 64 + k) % len(texts)]}
                                            for k in range(64)]}, ensure_ascii=False) for i in range(8)]
    workdir = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    server = Server(model, args.workers, args.threads, workdir)

    def load(path: str, bodies: list[str], seconds: float, connections: int) -> dict:
        if use_wrk:
            return run_wrk(server.base + path, bodies, seconds, connections, min(2, connections), workdir)
        return run_python(server.port, path, bodies, seconds, connections)

    result: dict = {}
    try:
        ready = server.wait_ready()
        print(f"server ready on {server.base} ({ready['model_version']}); load generator: "
              f"{'wrk' if use_wrk else 'python'}", file=sys.stderr)
        result = {
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model_version": ready["model_version"], "model": str(model),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "server": {"workers": args.workers, "threads": args.threads, "worker_class": "gthread"},
            "load_generator": "wrk" if use_wrk else "python", "connections": args.connections,
            "duration_s": duration, "texts": len(texts),
        }
        load("/v1/score", score_bodies, min(2.0, duration), args.connections)  # warm-up, not reported
        result["rss_mb_idle"] = server.rss_mb()
        print("phase: /v1/score", file=sys.stderr)
        result["score"] = load("/v1/score", score_bodies, duration, args.connections)
        print("phase: /v1/score/batch (64 tickets)", file=sys.stderr)
        batch = load("/v1/score/batch", batch_bodies, duration, max(1, args.connections // 2))
        batch["tickets_per_s"] = round(batch["rps"] * 64, 1)
        result["batch64"] = batch
        result["rss_mb_loaded"] = server.rss_mb()

        print("phase: reload under load", file=sys.stderr)
        other = workdir / "bundle-b"
        shutil.copytree(model, other)
        manifest = json.loads((other / "manifest.json").read_text("utf-8"))
        manifest["model_version"] += "-bench-reload"
        (other / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), "utf-8")
        reloads: list[dict] = []

        def reloader():
            for target, at in ((other, duration * 0.25), (model, duration * 0.6)):
                time.sleep(max(0.0, at - (time.monotonic() - t0)))
                t = time.monotonic()
                status, body = server.call("POST", "/v1/admin/reload", {"path": str(target.resolve())})
                reloads.append({"status": status, "seconds": round(time.monotonic() - t, 3),
                                "model_version": (body or {}).get("model_version"),
                                "propagated": (body or {}).get("propagated"),
                                "workers": (body or {}).get("workers")})

        t0 = time.monotonic()
        thread = threading.Thread(target=reloader)
        thread.start()
        under = load("/v1/score", score_bodies, duration, args.connections)
        thread.join(duration + 60)
        under["reloads"] = reloads
        under["failed_reloads"] = sum(r["status"] != 200 for r in reloads)
        result["reload_under_load"] = under
        result["rss_mb_after_reload"] = server.rss_mb()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", "utf-8")
    os.replace(tmp, out)
    s, b, r = result["score"], result["batch64"], result["reload_under_load"]
    print(f"/v1/score: {s['rps']} req/s, p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, {s['errors']} errors\n"
          f"/v1/score/batch x64: {b['tickets_per_s']} tickets/s, p50 {b['p50_ms']} ms, {b['errors']} errors\n"
          f"reload under load: {r['rps']} req/s, {r['errors']} errors, reloads "
          f"{[x['status'] for x in r['reloads']]}\nwrote {out}")
    return 0 if s["errors"] == 0 and r["errors"] == 0 and r["failed_reloads"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
