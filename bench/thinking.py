"""Streaming reasoning extraction: throughput against a bare scan, and linearity.

The text (about 1 MB of prose with thinking blocks, inline code and fenced
code) arrives in 20-character chunks, as from a model stream. The baseline
is the least any streaming filter must do: scan each chunk once for ``<``
and a backtick with ``str.find``. Ratio = baseline time / extractor time
(target at least 0.5). Linearity: extractor time at twice the input over the
time at once the input (target at most 2.2).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.thinking import StreamingThinkingExtractor

PROSE = (
    "The report covers the three quarters of the year, and each section explains what "
    "changed, why it changed and what the team plans to do next. Revenue grew steadily "
    "while costs stayed flat, which left room for the two new hires in support. "
)
# One reply as a reasoning model writes it: a thinking block, prose with a little inline
# code, one fenced block with comparisons in it, more prose. About 4 KB.
BLOCK = (
    "<thinking>The user asks for a summary of the report. I should list the quarters, "
    "compare them, and mention the hiring plan. "
    + PROSE
    + "</thinking>"
    + PROSE * 6
    + "Run `make report` to rebuild it.\n\n```python\nfor q in quarters:\n"
    "    if q.revenue < q.target:\n        print(q)\n```\n\n" + PROSE * 6 + "\n\n"
)

# Worst case: a tag, a backtick or a "<" every few words.
DENSE = (
    "Let me look. <thinking>first the facts, then the notes.</thinking>Here it is, with "
    "`inline <code>` and a < b.\n\n```python\nif x < 3:\n    print('<think>')\n```\n\n"
)


def make_text(size: int, block: str = BLOCK) -> str:
    return (block * (size // len(block) + 1))[:size]


def chunks_of(text: str, size: int = 20) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def baseline(chunks: list[str]) -> float:
    started = time.perf_counter()
    found = 0
    for chunk in chunks:
        found += chunk.find("<") + chunk.find("`")
    return time.perf_counter() - started


def extractor(chunks: list[str]) -> float:
    started = time.perf_counter()
    stream = StreamingThinkingExtractor()
    for chunk in chunks:
        stream.feed(chunk)
    stream.finish()
    return time.perf_counter() - started


def best(function: object, chunks: list[str], repeat: int) -> float:
    return min(function(chunks) for _ in range(repeat))  # type: ignore[operator]


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    size = 200_000 if quick else 1_000_000
    repeat = 3 if quick else 5
    one = chunks_of(make_text(size))
    two = chunks_of(make_text(size * 2))
    dense = chunks_of(make_text(size, DENSE))
    base = best(baseline, one, repeat)
    ours = best(extractor, one, repeat)
    ours_double = best(extractor, two, repeat)
    dense_ratio = best(baseline, dense, repeat) / best(extractor, dense, repeat)
    return [
        ("extractor MB/s", size / ours / 1e6, f"{len(one)} chunks of 20 chars"),
        ("throughput vs bare scan", base / ours, "target >= 0.5"),
        ("time at 2x input / 1x", ours_double / ours, "target <= 2.2 (linear)"),
        ("vs bare scan, tag-dense text", dense_ratio, "worst case: '<' or '`' every chunk"),
    ]


if __name__ == "__main__":
    for name, value, note in run(quick="--quick" in sys.argv):
        print(f"{name:28} {value:10.3f}  {note}")
