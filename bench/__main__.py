"""``python -m bench [--quick] [name ...]``: run the benchmarks and print one table.

Every module in ``bench/`` that defines ``run(quick: bool)`` is a benchmark;
it returns rows of (figure, value, note). Figures are ratios against a
baseline measured in the same run, since absolute times on shared machines
mean little.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import platform
import sys
import time
from pathlib import Path


def discover() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="a few seconds per benchmark")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    names = args.names or discover()
    rows: list[tuple[str, str, float, str]] = []
    failed = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        run = getattr(module, "run", None)
        if run is None:
            continue
        started = time.perf_counter()
        try:
            for figure, value, note in run(quick=args.quick):
                rows.append((name, figure, float(value), note))
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
