"""Load test of the HTTP service on loopback: N concurrent clients for M seconds.

Starts ``recfunnel serve RUN_DIR`` itself on 127.0.0.1 (a free port), waits for ``/healthz``,
warms up, then drives it with ``wrk`` (C, epoll, keep-alive; one thread so it takes as little
CPU from the server as possible) or, where wrk is not installed, an asyncio + httpx load
generator with keep-alive connections. Every run is bounded: ``--duration`` seconds per
scenario, and the whole script is killed after a hard time limit.

    python benchmarks/load_test.py --run /tmp/serve-run --workers 1,2 --clients 32 --duration 10

Without ``--run`` it trains the TFRS-tutorial preset on MovieLens 100k into a temporary folder
first (about a minute). Prints a table and writes it into ``docs/serving.md``.

``--rates``: ``0`` lets each client send its next request as soon as it has an answer (the
saturation throughput; latency is then mostly queueing, about clients / throughput); a number
paces the clients (random pauses) to offer about that many requests per second, which is how
"p99 at 500 req/s" is measured.

Scenarios (``--scenario``): ``user`` = GET a random known user's top 10; ``mixed`` = 70% user,
10% unknown user (cold start), 10% similar items, 10% POST of an anonymous history.

``--heavy``: instead, ``--clients`` (8) clients send the heaviest batch the API allows (256
users, k = 1000, 10 000-id allow and deny lists) back to back while one probe asks
``/healthz`` every 50 ms from its own process; reports the probe's latency (the service must
keep answering it within 100 ms). ``--baseline-src DIR`` runs the same against another
checkout's ``src`` (e.g. an older commit) in the same run, for a side-by-side ratio on a
shared machine.

    python benchmarks/load_test.py --run /tmp/serve-run --heavy --workers 1,2 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import markdown_table, write_section

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ENV = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{os.environ.get('PYTHONPATH', '')}"}

WRK_SCRIPT = r"""
math.randomseed(os.time())
local users, items, bodies = {}, {}, {}
for line in io.lines("%(users)s") do users[#users + 1] = line end
for line in io.lines("%(items)s") do items[#items + 1] = line end
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local mixed = %(mixed)s
local token = "%(token)s"
local pause = %(pause)s  -- mean ms between a response and the next request (0: none)
if pause > 0 then
  delay = function() return math.random(0, 2 * pause) end
end
if token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
request = function()
  local r = math.random()
  if not mixed or r < 0.7 then
    return wrk.format("GET", "/v1/recommendations/" .. users[math.random(#users)] .. "?k=10")
  elseif r < 0.8 then
    return wrk.format("GET", "/v1/recommendations/stranger" .. math.random(100000) .. "?k=10")
  elseif r < 0.9 then
    return wrk.format("GET", "/v1/items/" .. items[math.random(#items)] .. "/similar?k=10")
  end
  local body = bodies[math.random(#bodies)]
  return wrk.format("POST", "/v1/recommendations", {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d, "connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    run_dir: str, workers: int, token: str | None, src: Path | None = None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        PYTHON,
        "-m",
        "recfunnel.cli",
        "serve",
        run_dir,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    env = dict(ENV)
    if token:
        env["RECFUNNEL_TOKEN"] = token
    if src is not None:
        env["PYTHONPATH"] = f"{src}:{os.environ.get('PYTHONPATH', '')}"
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(proc)
    raise SystemExit("error: the server did not become healthy within 120 s")


def server_cpu_seconds(session: int) -> float:
    """CPU time (user + system) used so far by every process of the server's session (Linux);
    a load figure that is less sensitive to other programs on a shared machine than req/s."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of stat, the session id
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_wrk(url, clients, duration, scenario, ids_dir: Path, token, rate) -> dict:
    script = ids_dir / "load.lua"
    script.write_text(
        WRK_SCRIPT
        % {
            "users": ids_dir / "users.txt",
            "items": ids_dir / "items.txt",
            "bodies": ids_dir / "bodies.txt",
            "mixed": "true" if scenario == "mixed" else "false",
            "token": token or "",
            "pause": int(1000 * clients / rate) if rate else 0,
        }
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{duration}s", "--timeout", "5s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"error: wrk gave no result:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(line[7:])
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "p50_ms": raw["p50_us"] / 1e3,
        "p99_ms": raw["p99_us"] / 1e3,
        "errors": errors,
    }


async def _httpx_load(url, clients, duration, scenario, users, items, token, rate) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: list[float] = []
    errors = 0
    rng = random.Random(0)
    end = time.perf_counter() + duration

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < end:
            r = rng.random() if scenario == "mixed" else 0.0
            started = time.perf_counter()
            try:
                if r < 0.7:
                    resp = await client.get(f"/v1/recommendations/{rng.choice(users)}?k=10")
                elif r < 0.8:
                    resp = await client.get(f"/v1/recommendations/stranger{rng.random()}?k=10")
                elif r < 0.9:
                    resp = await client.get(f"/v1/items/{rng.choice(items)}/similar?k=10")
                else:
                    body = {"history": [rng.choice(items)], "k": 10}
                    resp = await client.post("/v1/recommendations", json=body)
                errors += resp.status_code != 200
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - started)
            if rate:
                await asyncio.sleep(rng.uniform(0, 2 * clients / rate))

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, limits=limits, headers=headers, timeout=5) as c:
        await asyncio.gather(*(one(c) for _ in range(clients)))
    seconds = time.perf_counter() - started
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e3

    return {
        "requests": len(latencies),
        "seconds": seconds,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "errors": errors,
    }


def heaviest_body(users: list[str], items: list[str], rng: random.Random) -> bytes:
    """The heaviest batch the API accepts: 256 known users, k = 1000, allow and deny lists of
    10 000 ids each. The deny list repeats a few items, so each answer still holds k items:
    the largest answer the API can be made to write (256 000 scored items)."""
    body = {
        "users": rng.choices(users, k=256),
        "k": 1000,
        "exclude_seen": True,
        "allow": rng.choices(items, k=10_000),
        "deny": rng.choices(items[:5], k=10_000),
    }
    return json.dumps(body).encode()


# The /healthz probe runs in its own process (as a load balancer's health check would), so the
# load generator's own event loop, busy with megabytes of answers, does not delay it.
PROBE = r"""
import gc, json, sys, time, httpx
gc.disable()  # the probe's own collector pauses (tens of ms) are not the server's latency
url, seconds = sys.argv[1], float(sys.argv[2])
latencies, errors = [], 0
time.sleep(1.0)  # let the heavy requests pile up first
end = time.perf_counter() + seconds - 1.0
with httpx.Client(base_url=url, timeout=30) as client:
    while time.perf_counter() < end:
        started = time.perf_counter()
        try:
            errors += client.get("/healthz").status_code != 200
        except httpx.HTTPError:
            errors += 1
        latencies.append(time.perf_counter() - started)
        time.sleep(0.05)
print(json.dumps({"latencies": latencies, "errors": errors}))
"""


async def _heavy_with_probe(url, clients, duration, users, items, token) -> dict:
    """``clients`` heavy batch senders, and a /healthz probe every 50 ms from another process."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers["content-type"] = "application/json"
    rng = random.Random(0)
    bodies = [heaviest_body(users, items, rng) for _ in range(4)]
    heavy = {"ok": 0, "errors": 0, "seconds": []}
    end = time.perf_counter() + duration
    prober = await asyncio.create_subprocess_exec(
        PYTHON, "-c", PROBE, url, str(duration), stdout=asyncio.subprocess.PIPE
    )

    async def sender(client, i):
        while time.perf_counter() < end:
            started = time.perf_counter()
            try:
                r = await client.post("/v1/recommendations", content=bodies[i % len(bodies)])
                heavy["ok" if r.status_code == 200 else "errors"] += 1
            except httpx.HTTPError:
                heavy["errors"] += 1
            heavy["seconds"].append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as c:
        await asyncio.gather(*(sender(c, i) for i in range(clients)))
    out, _ = await prober.communicate()
    probed = json.loads(out)
    probe = sorted(probed["latencies"])
    probe_errors = probed["errors"]
    heavy_s = sorted(heavy["seconds"])

    def pct(values, q):
        return values[min(len(values) - 1, int(q / 100 * len(values)))] * 1e3 if values else 0

    return {
        "heavy": heavy["ok"],
        "heavy_errors": heavy["errors"],
        "heavy_p50_s": pct(heavy_s, 50) / 1e3,
        "probes": len(probe),
        "p50": pct(probe, 50),
        "p99": pct(probe, 99),
        "max": probe[-1] * 1e3 if probe else 0,
        "probe_errors": probe_errors,
    }


HEAVY_HEADER = [
    "code",
    "workers",
    "heavy clients",
    "seconds",
    "heavy batches answered",
    "batch p50 s",
    "/healthz probes",
    "/healthz p50 ms",
    "/healthz p99 ms",
    "/healthz max ms",
    "errors",
]


def heavy_main(args, duration, run_dir, run, baseline: Path | None) -> list[list]:
    rows = []
    sources = [("this", None)] + ([("baseline", baseline)] if baseline else [])
    for workers in [int(w) for w in args.workers.split(",")]:
        for name, src in sources:
            proc, url = start_server(run_dir, workers, args.token, src)
            try:
                r = asyncio.run(
                    _heavy_with_probe(url, args.clients, duration, run.users.ids,
                                      run.items.ids, args.token)
                )  # fmt: skip
            finally:
                stop_server(proc)
            rows.append([name, workers, args.clients, duration, r["heavy"],
                         f"{r['heavy_p50_s']:.2f}", r["probes"], f"{r['p50']:.1f}",
                         f"{r['p99']:.1f}", f"{r['max']:.1f}",
                         r["heavy_errors"] + r["probe_errors"]])  # fmt: skip
            print(markdown_table(HEAVY_HEADER, rows[-1:]), flush=True)
    return rows


def ensure_run(run_dir: str | None, workdir: Path) -> str:
    if run_dir:
        return run_dir
    out = workdir / "run"
    print("training the seed preset on MovieLens 100k into a temporary run ...", file=sys.stderr)
    subprocess.run(
        [PYTHON, "-m", "recfunnel.cli", "train", "--preset", "seed", "--out", str(out)],
        env=ENV,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return str(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", help="run folder to serve (default: train the seed preset)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts to test")
    p.add_argument("--clients", type=int, default=32, help="--heavy: 8 is the target")
    p.add_argument("--duration", type=int, default=10, help="seconds per scenario (max 60)")
    p.add_argument("--scenario", default="user,mixed", help="user and/or mixed")
    p.add_argument(
        "--rates",
        default="0,550",
        help="comma-separated offered loads in req/s "
        "(0: as fast as the clients can go, each waiting for its answer)",
    )
    p.add_argument("--tool", default="auto", choices=("auto", "wrk", "httpx"))
    p.add_argument("--token", default=None, help="serve with this bearer token")
    p.add_argument("--no-doc", action="store_true", help="do not write docs/serving.md")
    p.add_argument("--heavy", action="store_true", help="heaviest batches + /healthz probe")
    p.add_argument("--baseline-src", type=Path, help="--heavy: also run this checkout's src/")
    args = p.parse_args(argv)
    duration = min(max(1, args.duration), 60)
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "httpx"
    signal.alarm(600 + 4 * len(args.workers.split(",")) * (duration + 30))  # hard bound

    from recfunnel.runs import Run

    rows = []
    load_before = os.getloadavg()[0]  # other programs on the machine skew every number
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir = ensure_run(args.run, tmp)
        run = Run.load(run_dir)
        from urllib.parse import quote

        if args.heavy:
            rows = heavy_main(args, duration, run_dir, run, args.baseline_src)
            table = markdown_table(HEAVY_HEADER, rows)
            print()
            print(table)
            if not args.no_doc:
                note = (
                    f"`{' '.join(['python benchmarks/load_test.py', *(argv or sys.argv[1:])])}`"
                    f" — asyncio + httpx clients; {os.cpu_count()} cores shared with other "
                    f"jobs (load average before/after: {load_before:.1f}/"
                    f"{os.getloadavg()[0]:.1f}), {time.strftime('%Y-%m-%d %H:%M')}."
                )
                write_section("serving.md", "load_test_heavy", note + "\n\n" + table)
            return 0
        users = run.users.ids
        items = [quote(i, safe="") for i in run.items.ids]
        (tmp / "users.txt").write_text("\n".join(quote(u, safe="") for u in users) + "\n")
        (tmp / "items.txt").write_text("\n".join(items) + "\n")
        bodies = [json.dumps({"history": [i], "k": 10}) for i in run.items.ids]
        (tmp / "bodies.txt").write_text("\n".join(bodies) + "\n")
        for workers in [int(w) for w in args.workers.split(",")]:
            proc, url = start_server(run_dir, workers, args.token)
            try:
                for scenario, rate in itertools.product(
                    args.scenario.split(","), [int(r) for r in args.rates.split(",")]
                ):
                    for seconds in (2, duration):  # warm-up, then measure
                        cpu_before = server_cpu_seconds(proc.pid)
                        if tool == "wrk":
                            result = run_wrk(
                                url, args.clients, seconds, scenario, tmp, args.token, rate
                            )
                        else:
                            result = asyncio.run(
                                _httpx_load(
                                    url,
                                    args.clients,
                                    seconds,
                                    scenario,
                                    users,
                                    list(run.items.ids),
                                    args.token,
                                    rate,
                                )
                            )
                    cpu_ms = (server_cpu_seconds(proc.pid) - cpu_before) * 1e3 / result["requests"]
                    rps = result["requests"] / result["seconds"]
                    rows.append(
                        [
                            workers,
                            scenario,
                            args.clients,
                            rate or "max",
                            f"{result['seconds']:.0f}",
                            result["requests"],
                            f"{rps:.0f}",
                            f"{result['p50_ms']:.1f}",
                            f"{result['p99_ms']:.1f}",
                            result["errors"],
                            f"{cpu_ms:.2f}",
                        ]
                    )
                    print(markdown_table(HEADER, rows[-1:]), flush=True)
            finally:
                stop_server(proc)
    table = markdown_table(HEADER, rows)
    print()
    print(table)
    if not args.no_doc:
        cpu = platform.processor() or platform.machine()
        note = (
            f"`{' '.join(['python benchmarks/load_test.py', *(argv or sys.argv[1:])])}` — "
            f"load generator: {tool} (1 thread, keep-alive); {os.cpu_count()} cores ({cpu}), "
            f"{time.strftime('%Y-%m-%d %H:%M')}. Server and load generator share the machine; "
            f"load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f}."
        )
        write_section("serving.md", "load_test", note + "\n\n" + table)
    return 0


HEADER = [
    "workers",
    "scenario",
    "clients",
    "offered req/s",
    "seconds",
    "requests",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "server CPU ms/req",
]

if __name__ == "__main__":
    sys.exit(main())
