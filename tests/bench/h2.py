"""`make bench-h2`: the read scenario (2 GET /api/v1/users/{id}) over HTTP/1.1 and over HTTP/2 by prior knowledge
(h2c), against one `accounts serve` (HTTP_VERSION=auto, two workers), with h2load.

    python -m tests.bench.h2 [--users 100000] [--duration 5] [--runs 3] [--connections 64] [--few 4]

Seeds the bench database as `make bench` does, warms every client set-up up, then takes the runs in turn:
HTTP/1.1 with wrk (`make bench`'s client) and with `h2load --h1`, h2c over as many connections with one stream
each, then `--few` connections over HTTP/1.1 (one request in flight on each) and over h2c (the same requests in
flight as before, as streams). Prints the medians and each set-up's ratio to `h2load --h1`, and writes them to
tests/bench/results/h2.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.bench.run import RESULTS, SCENARIOS, WORKERS, Bench, Figure, Server, _median, _non_2xx_answers, _wrk

READ = next(scenario for scenario in SCENARIOS if scenario.name.startswith("2 "))


@dataclass(frozen=True)
class Client:
    name: str
    connections: int
    streams: int = 1
    """Requests in flight on each connection (HTTP/2 streams)."""
    tool: str = "h2load"
    http1: bool = False


def clients(connections: int, few: int) -> list[Client]:
    return [
        Client("HTTP/1.1, wrk", connections, tool="wrk", http1=True),
        Client("HTTP/1.1, h2load --h1", connections, http1=True),
        Client("HTTP/2 h2c, h2load", connections),
        Client("HTTP/1.1, h2load --h1, few connections", few, http1=True),
        Client("HTTP/2 h2c, h2load, few connections", few, streams=connections // few),
    ]


def run_client(client: Client, server: Server, bench: Bench, duration: int) -> dict[str, int]:
    if client.tool == "wrk":
        env = dict(os.environ) | {
            "BENCH_METHOD": READ.method,
            "BENCH_PATH": READ.path,
            "BENCH_ACCEPT": READ.accept,
            "BENCH_IDS_FILE": str(bench.ids_file),
        }
        return _wrk(server.base, server.env_for(READ, env), duration=duration, connections=client.connections)
    return _h2load(client, server, bench.workdir, duration)


def _h2load(client: Client, server: Server, workdir: Path, duration: int) -> dict[str, int]:
    """One h2load run over the bench ids (each connection walks the list in turn); returns what `_wrk` returns."""
    uris = workdir / "uris.txt"
    if not uris.exists():
        ids = (workdir / "ids.txt").read_text().split()
        uris.write_text("".join(f"{server.base}{READ.path.replace('{id}', id_)}\n" for id_ in ids))
    log = workdir / "h2load.log"
    command = [
        "h2load", "-t", str(min(2, client.connections)), "-c", str(client.connections), "-m", str(client.streams),
        "-D", str(duration), "-i", str(uris), "--log-file", str(log),
        "-H", f"Accept: {READ.accept}", "-H", f"Authorization: Bearer {server.token}",
        *(["--h1"] if client.http1 else []),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603
    finished = re.search(r"finished in ([\d.]+)(m?s),", output)
    counts = re.search(r"requests: .* (\d+) done, .* (\d+) errored, (\d+) timeout", output)
    answered_2xx = re.search(r"status codes: (\d+) 2xx", output)
    if finished is None or counts is None or answered_2xx is None:
        raise SystemExit(f"cannot read h2load's output:\n{output}")
    elapsed_us = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line)
    log.unlink()
    done = int(counts.group(1))
    return {
        "requests": done,
        "duration_us": int(float(finished.group(1)) * (1000 if finished.group(2) == "ms" else 1_000_000)),
        "p50_us": int(statistics.median(elapsed_us)) if elapsed_us else 0,
        "p99_us": elapsed_us[int(len(elapsed_us) * 0.99)] if elapsed_us else 0,
        "non_2xx": done - int(answered_2xx.group(1)),
        "socket_errors": int(counts.group(2)) + int(counts.group(3)),
    }


def render(figures: dict[Client, Figure], non_2xx: dict[str, int], args: argparse.Namespace) -> str:
    baseline = next(figure for client, figure in figures.items() if client.tool == "h2load" and client.http1)
    lines = [
        f"{READ.name}, {args.users:,} users; accounts serve with HTTP_VERSION=auto, {WORKERS} workers; "
        f"{args.runs} runs of {args.duration} s in turn (median).",
        "",
        "| client | connections x streams | req/s | p50 ms | p99 ms | errors (non-2xx / socket) | x h2load --h1 |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {client.name} | {client.connections} x {client.streams} | {figure.rps:.0f} | {figure.p50_ms} "
        f"| {figure.p99_ms} | {figure.non_2xx} / {figure.socket_errors} | {figure.rps / baseline.rps:.2f} |"
        for client, figure in figures.items()
    ]
    statuses = ", ".join(f"{count} x {status}" for status, count in sorted(non_2xx.items()))
    lines += ["", f"Accounts' non-2xx answers in the measured runs: {statuses or 'none'}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--few", type=int, default=4, help="connections of the multiplexed h2c set-up")
    args = parser.parse_args()
    for tool, package in (("h2load", "nghttp2-client"), ("wrk", "wrk")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian package {package}; make bench-h2 installs it)")
    os.environ["HTTP_VERSION"] = "auto"  # the server inherits it: both protocols on one port, whatever the shell says
    set_ups = clients(args.connections, args.few)
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        bench = Bench(args, Path(workdir))
        bench.prepare()
        server = bench.start("accounts")
        try:
            for client in set_ups:
                run_client(client, server, bench, duration=2)
            runs: dict[Client, list[dict[str, int]]] = {client: [] for client in set_ups}
            answered_before = _non_2xx_answers(server)
            for _ in range(args.runs):
                for client in set_ups:
                    result = run_client(client, server, bench, args.duration)
                    runs[client].append(result)
                    rps = result["requests"] / result["duration_us"] * 1e6
                    print(f"  {client.name:40} {client.connections}x{client.streams:<3} {rps:7.0f} req/s", flush=True)
            non_2xx = {
                status: count - answered_before.get(status, 0)
                for status, count in _non_2xx_answers(server).items()
                if count > answered_before.get(status, 0)
            }
        finally:
            server.stop()
    table = render({client: _median(results) for client, results in runs.items()}, non_2xx, args)
    (RESULTS / "h2.md").write_text(table)
    print("\n" + table)


if __name__ == "__main__":
    main()
