"""What Prometheus metrics cost the Access Point: the same AP with metrics on and off.

Two Access Points with the same configuration (the public bench resource to the shared
nginx backend), one with ``metrics.listen`` and one without, run side by side for each
worker count. wrk loads them in turns, in short blocks (off, on, on, off, off, on, ...), so
that the machine's other load falls on both alike; each one's figure is the median of its
blocks. The one with metrics is scraped every second (Prometheus would every 15 s) for the
whole run, during the blocks of both sides: the cost measured includes rendering, and the
scraper's own activity falls on both sides alike. (Scraping only while the one with metrics
was loaded made it look about 6 % slower whatever it did: with the scraper asking nginx
instead, once a second, the Access Point being loaded spent 2.3 µs more CPU per request,
32.0 -> 34.3 µs, and served 6 % fewer requests/s.) Goal: requests/s with metrics >= 0.97x
without. The scraped request count is checked against wrk's (they should agree, up to the
requests in flight when a block ends).

Requests/s move with whatever else the machine runs; so each block also reads the CPU time
the Access Point's processes spent (user + system, from /proc: the worker, and with several
workers the supervisor that renders the scrapes), and the table gives CPU microseconds per
request on each side: the cost of metrics is their difference, which other load disturbs
far less than it does requests/s.

bench/run.py runs it as the ``metrics`` step and writes the table into docs/benchmarks.md.
One run's pairs seldom tell a cost of 1 % from one of 3 % on a shared machine; run as a
script, this module pools the pairs of several runs' saved results and judges the goal on
them all::

    .venv/bin/python bench/metrics_cost.py bench/results/A.json bench/results/B.json ...
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from paired import pair_interval, verdict

DOCS = ("<!-- bench:metrics:start -->", "<!-- bench:metrics:end -->")
HEADING = "## Latest results: the cost of metrics"

GOAL_RATIO = 0.97
WORKERS = (1, 2)
ROUNDS = 20  # blocks per Access Point and worker count
BLOCK_SECONDS = 5
SCRAPE_EVERY = 1.0
COUNT_LINE = 'gatehouse_access_point_requests_total{method="GET",resource="bench",status="200"}'


@dataclass
class Block:
    rps: float
    p99_ms: float | None
    requests: int
    errors: int
    #: CPU seconds the Access Point spent during the block (None: not measured).
    cpu: float | None = None

    @property
    def cpu_us(self) -> float | None:
        """CPU microseconds per request in this block."""
        return self.cpu / self.requests * 1e6 if self.cpu is not None and self.requests else None


@dataclass
class Pair:
    workers: int
    off: list[Block] = field(default_factory=list)
    on: list[Block] = field(default_factory=list)
    counted: int = 0  # requests the metrics counted during the "on" blocks
    #: CPU seconds the Access Point spent during its blocks (None: not measured).
    cpu_off: float | None = None
    cpu_on: float | None = None
    completed: int = 0  # requests wrk completed during them
    scrapes: int = 0
    failure: str | None = None

    @staticmethod
    def _median(blocks: list[Block], pick: Callable[[Block], float | None]) -> float | None:
        values = [v for v in map(pick, blocks) if v is not None]
        return statistics.median(values) if values else None

    def spread(self, on: bool) -> str:
        """The lowest and highest block, requests/s: how noisy the machine was."""
        values = [b.rps for b in (self.on if on else self.off)]
        return f"{min(values):,.0f} to {max(values):,.0f}" if values else "—"

    def rps(self, on: bool) -> float | None:
        return self._median(self.on if on else self.off, lambda b: b.rps)

    def p99(self, on: bool) -> float | None:
        return self._median(self.on if on else self.off, lambda b: b.p99_ms)

    def cpu_us(self, on: bool) -> float | None:
        """CPU microseconds per request over the side's blocks."""
        cpu = self.cpu_on if on else self.cpu_off
        requests = sum(b.requests for b in (self.on if on else self.off))
        return cpu / requests * 1e6 if cpu is not None and requests else None

    @property
    def cpu_ratio(self) -> float | None:
        """CPU per request without metrics / with (1.0: no cost; 0.97: 3 % more CPU)."""
        on, off = self.cpu_us(True), self.cpu_us(False)
        return off / on if on and off is not None else None

    @property
    def ratio(self) -> float | None:
        on, off = self.rps(True), self.rps(False)
        return on / off if on is not None and off else None

    def interval(self) -> tuple[float, float] | None:
        """The 95 % interval of the ratio of the pairs of blocks (each block with metrics over
        the block without that ran next to it): how far this run can tell the ratio."""
        return pair_interval([b.rps for b in self.off], [b.rps for b in self.on])

    def cpu_interval(self) -> tuple[float, float] | None:
        """The 95 % interval of the CPU ratio of the pairs of blocks (CPU per request
        without metrics over with them, in blocks that ran next to each other)."""
        pairs = [(a.cpu_us, b.cpu_us) for a, b in zip(self.off, self.on, strict=False)]
        kept = [(off, on) for off, on in pairs if off is not None and on is not None]
        return pair_interval([on for _, on in kept], [off for off, _ in kept])

    def verdict(self) -> str:
        """``met`` or ``not met`` by the medians; ``cannot tell`` when the run's interval
        holds values on both sides of the goal."""
        ratio = self.ratio
        return "—" if ratio is None else verdict(ratio, GOAL_RATIO, self.interval())

    def summary(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "rps_off": self.rps(False),
            "rps_on": self.rps(True),
            "ratio": self.ratio,
            "p99_off_ms": self.p99(False),
            "p99_on_ms": self.p99(True),
            "blocks_off": [b.__dict__ for b in self.off],
            "blocks_on": [b.__dict__ for b in self.on],
            "cpu_us_off": self.cpu_us(False),
            "cpu_us_on": self.cpu_us(True),
            "cpu_ratio": self.cpu_ratio,
            "interval": self.interval(),
            "cpu_interval": self.cpu_interval(),
            "counted": self.counted,
            "completed": self.completed,
            "scrapes": self.scrapes,
            "failure": self.failure,
        }


def scrape_count(port: int) -> int:
    """The bench resource's 200 answers, as the metrics endpoint says."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"metrics answered {response.status}")
    for line in text.splitlines():
        if line.startswith(COUNT_LINE):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


class Scraper:
    """Scrapes a metrics endpoint every :data:`SCRAPE_EVERY` seconds while running."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.count = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_EVERY):
            try:
                scrape_count(self.port)
                self.count += 1
            except (OSError, RuntimeError) as exc:
                self.errors.append(str(exc))


Load = Callable[[str, int], Any]  # (url, seconds) -> a WrkResult
#: on -> CPU seconds the Access Point with (True) or without metrics has spent so far.
CpuClock = Callable[[bool], float | None]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_group_cpu(pgid: int) -> float | None:
    """CPU seconds (user + system) of the live processes of the process group ``pgid``, from
    /proc; None without /proc."""
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return None
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid:  # pgrp; then utime, stime at 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def measure(
    workers: int,
    off_url: str,
    on_url: str,
    metrics_port: int,
    load: Load,
    warmup: int,
    cpu: CpuClock | None = None,
) -> Pair:
    """Blocks in turns (ABBA order) on the two Access Points; see the module docstring."""
    pair = Pair(workers)
    if warmup:
        load(off_url, warmup)
        load(on_url, warmup)
    # The scraper runs through every block, the ones without metrics too: its own work in
    # this process (a connection and a request a second) slows whichever Access Point is
    # loaded at the time, by about as much as metrics cost (see the module docstring).
    with Scraper(metrics_port) as scraper:
        for round_ in range(ROUNDS):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for on in order:
                _block(pair, on, on_url if on else off_url, metrics_port, load, cpu)
    pair.scrapes = scraper.count
    if scraper.errors:
        pair.failure = f"scrapes failed: {scraper.errors[0]}"
    return pair


def _block(
    pair: Pair, on: bool, url: str, metrics_port: int, load: Load, cpu: CpuClock | None
) -> None:
    """One block of load on one side, with its CPU time and (on) the requests counted."""
    before = scrape_count(metrics_port) if on else 0
    spent = cpu(on) if cpu is not None else None
    result = load(url, BLOCK_SECONDS)
    now = cpu(on) if cpu is not None else None
    if on:
        pair.counted += scrape_count(metrics_port) - before
        pair.completed += result.requests
    used = now - spent if spent is not None and now is not None else None
    if used is not None:
        if on:
            pair.cpu_on = (pair.cpu_on or 0.0) + used
        else:
            pair.cpu_off = (pair.cpu_off or 0.0) + used
    block = Block(result.rps, result.latency_ms.get("99"), result.requests, result.errors, used)
    (pair.on if on else pair.off).append(block)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def render(pairs: list[Pair], info: dict[str, Any], connections: int) -> str:
    lines = [
        f"The same Access Point (public resource, nginx backend) with `metrics.listen` and "
        f"without, loaded in turns: {ROUNDS} blocks of {BLOCK_SECONDS} s each (ABBA order), "
        f"wrk with {connections} connections; medians of the blocks. The one with metrics was "
        f"scraped every {SCRAPE_EVERY:g} s throughout, during both sides' blocks. Goal: >= "
        f"{GOAL_RATIO}x the requests/s without metrics. "
        "Command: `.venv/bin/python bench/run.py --only metrics`.",
        "",
        f"Machine: {info.get('cpu', '?')}, {info.get('nproc', '?')} CPUs; load average at "
        f"start {info.get('load', '?')}, at the end {info.get('load_end', '?')}; two busy "
        f"CPUs at once ran at {info.get('cores', '?')} the speed of one alone "
        "(`bench/cores.py`).",
        "",
        "| workers | req/s off | req/s on | ratio | 95 % interval | goal | blocks off | blocks on "
        "| CPU µs/request off | on | CPU ratio | its 95 % interval "
        "| p99 off (ms) | p99 on (ms) | counted by metrics / by wrk | scrapes |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pair in pairs:
        if pair.failure and pair.ratio is None:
            lines.append(f"| {pair.workers} | failed: {pair.failure} ||||||||||||||")
            continue
        interval, cpu_interval = (
            "—" if bounds is None else f"{bounds[0]:.3f} to {bounds[1]:.3f}"
            for bounds in (pair.interval(), pair.cpu_interval())
        )
        lines.append(
            f"| {pair.workers} | {_fmt(pair.rps(False))} | {_fmt(pair.rps(True))} "
            f"| {_fmt(pair.ratio, 3)}x | {interval} | >= {GOAL_RATIO}x: {pair.verdict()} "
            f"| {pair.spread(False)} "
            f"| {pair.spread(True)} | {_fmt(pair.cpu_us(False), 2)} "
            f"| {_fmt(pair.cpu_us(True), 2)} | {_fmt(pair.cpu_ratio, 3)}x | {cpu_interval} "
            f"| {_fmt(pair.p99(False), 2)} "
            f"| {_fmt(pair.p99(True), 2)} | {pair.counted:,} / {pair.completed:,} "
            f"| {pair.scrapes} |"
        )
    lines += [
        "",
        "95 % interval: of the mean ratio of the pairs of blocks (each block with metrics over "
        "the block without it that ran next to it; Student's t): where it holds values on both "
        "sides of the goal, this run cannot tell whether the goal is met, whatever the medians "
        "say. Blocks off/on: the lowest and highest requests/s of the blocks, for how much the "
        "machine's other load moved the figures. CPU µs/request: the Access Point's processes' "
        "CPU time during the side's blocks over its requests; CPU ratio: off / on (0.97x: "
        "metrics cost 3 % more CPU per request), and the 95 % interval of the pairs' CPU "
        "ratios. Counting on the request path is one clock read "
        "per read event (the client's request, the backend's response: two for a request "
        "answered in one read, as nginx times requests) and two observations in histograms "
        "whose buckets are native integer fields, in the worker's own memory (no labels, no "
        "lookup while the method and status are the previous request's: a resource's series "
        "and a backend's histogram hang off the compiled route and origin). Without "
        "`metrics.listen` the AP reads no clock.",
        "",
    ]
    return "\n".join(lines)


def pooled(paths: list[str]) -> list[tuple[Pair, int]]:
    """Every run's pairs of blocks in the saved results ``paths`` (bench/results/*.json), one
    :class:`Pair` per worker count, with how many runs it pools: a run's blocks stay next to
    the blocks they ran beside, so pooling runs only adds pairs. Files without metrics
    results are left out."""
    pairs: dict[int, Pair] = {}
    runs: dict[int, int] = {}
    for path in paths:
        try:
            with open(path) as file:
                saved = json.load(file)
            for summary in _summaries(saved):
                pair = pairs.setdefault(summary["workers"], Pair(summary["workers"]))
                pair.off += [Block(**block) for block in summary["blocks_off"]]
                pair.on += [Block(**block) for block in summary["blocks_on"]]
                runs[pair.workers] = runs.get(pair.workers, 0) + 1
        except OSError as exc:
            raise SystemExit(f"{path}: cannot read it ({exc.strerror})") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise SystemExit(f"{path}: not a bench result with metrics blocks ({exc})") from None
    return [(pairs[workers], runs[workers]) for workers in sorted(pairs)]


def _summaries(saved: Any) -> Iterator[dict[str, Any]]:
    if isinstance(saved, dict):
        if "blocks_off" in saved and "workers" in saved:
            yield saved
            return
        saved = list(saved.values())
    if isinstance(saved, list):
        for item in saved:
            yield from _summaries(item)


def main() -> None:
    """``bench/metrics_cost.py RESULTS.json ...``: the goal judged on several runs' pairs."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", nargs="+", help="bench/results/*.json of metrics runs")
    args = parser.parse_args()
    found = pooled(args.results)
    if not found:
        raise SystemExit("none of these files holds a metrics run (bench/run.py --only metrics)")
    for pair, runs in found:
        rps, cpu = pair.interval(), pair.cpu_interval()
        ratios = [b.rps / a.rps for a, b in zip(pair.off, pair.on, strict=False) if a.rps]
        mean = statistics.fmean(ratios) if ratios else None
        judged = "—" if mean is None else verdict(mean, GOAL_RATIO, rps, "the mean")
        print(
            f"{pair.workers} worker(s): {runs} runs, {len(ratios)} pairs; requests/s "
            f"with / without metrics: mean pair ratio {_fmt(mean, 3)}x, 95 % interval "
            f"{_span(rps)}, >= {GOAL_RATIO}x: {judged}; "
            f"CPU per request without / with: 95 % interval {_span(cpu)}"
        )


def _span(bounds: tuple[float, float] | None) -> str:
    return "—" if bounds is None else f"{bounds[0]:.3f} to {bounds[1]:.3f}"


if __name__ == "__main__":
    main()
