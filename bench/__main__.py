"""``python -m bench [--quick] [name ...]``: run the benchmarks and print one table.

Every module in ``bench/`` that defines ``run(quick: bool)`` is a benchmark;
it returns rows of (figure, value, note). Figures are ratios against a
baseline measured in the same run, since absolute times on shared machines
mean little. Each benchmark runs in a process of its own, so none inherits
another's heap, threads or warmed caches.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

from bench import json_from_child


def discover() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def run_here(name: str, quick: bool) -> list[tuple[str, float, str]]:
    """One benchmark in this process; its rows (none if the module is not a benchmark)."""
    run = getattr(importlib.import_module(f"bench.{name}"), "run", None)
    if run is None:
        return []
    return [(figure, float(value), note) for figure, value, note in run(quick=quick)]


def run_apart(name: str, quick: bool) -> list[tuple[str, float, str]]:
    """One benchmark in a fresh interpreter; its rows, or a RuntimeError with its stderr."""
    rows = json_from_child(["-m", "bench", "--rows-of", name] + (["--quick"] if quick else []))
    return [(figure, value, note) for figure, value, note in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="a few seconds per benchmark")
    parser.add_argument("--rows-of", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    if args.rows_of:  # the child side of run_apart: rows as JSON on stdout
        print(json.dumps(run_here(args.rows_of, args.quick)))
        return 0
    names = args.names or discover()
    rows: list[tuple[str, str, float, str]] = []
    failed = []
    for name in names:
        started = time.perf_counter()
        try:
            for figure, value, note in run_apart(name, args.quick):
                rows.append((name, figure, value, note))
        except Exception as exc:  # a broken benchmark is reported, and fails the run
            failed.append(name)
            rows.append((name, f"FAILED: {type(exc).__name__}: {exc}", float("nan"), ""))
        print(f"[{name}: {time.perf_counter() - started:.1f}s]", file=sys.stderr)
    print(
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()}"
    )
    width = max((len(f"{b}: {f}") for b, f, _, _ in rows), default=10)
    print(f"{'figure'.ljust(width)}  {'value':>10}  target / note")
    for bench_name, figure, value, note in rows:
        print(f"{(bench_name + ': ' + figure).ljust(width)}  {value:>10.3f}  {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
