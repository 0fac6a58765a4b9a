"""What holds a server's memory between two tracemalloc snapshots of the bench probe.

    python -m tests.load.memory_holders <before> <after> --per <streams> [--top 25]

The snapshots come from tests/bench/server_probe.py (PROBE_TRACEMALLOC=1); `make load-streams`
with `--tracemalloc` takes one before a held phase and one with all its streams open. Memory
that was allocated in between and is still alive is summed two ways, divided by `--per`:
- by package: the innermost frame's package (app, uvicorn, h11, starlette, chatkit, ...), and
  the innermost frame of our own code (app/) when there is one, so library allocations made on
  our behalf are charged to the line that asked for them;
- by allocation site: the whole traceback, innermost frame first.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import tracemalloc
from collections import Counter
from pathlib import Path

_ROOT = str(Path(__file__).parents[2]) + "/"
_STDLIB = sysconfig.get_paths()["stdlib"] + "/"
_IGNORED = [
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
]


def short_path(filename: str) -> str:
    """A file as `app/chat/server.py`, `starlette/responses.py` or `asyncio/tasks.py`."""
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    if filename.startswith(_ROOT):
        return filename[len(_ROOT) :]
    if filename.startswith(_STDLIB):
        return filename[len(_STDLIB) :]
    return filename


def package(filename: str) -> str:
    """The top-level package (or stdlib module) a file belongs to."""
    short = short_path(filename)
    return short.split("/", 1)[0].removesuffix(".py")


def _frames(trace: tracemalloc.Traceback) -> list[tracemalloc.Frame]:
    """Innermost first (a traceback iterates from the oldest frame)."""
    return list(reversed(trace))


def top_holders(before: Path, after: Path, per: int, *, limit: int = 25) -> list[str]:
    """Lines to print: memory alive in `after` and not in `before`, per unit of `per`."""
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(_IGNORED)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(_IGNORED)
    stats = new.compare_to(old, "traceback")
    growth = [stat for stat in stats if stat.size_diff > 0]
    total = sum(stat.size_diff for stat in stats)
    by_package: Counter[str] = Counter()
    by_our_line: Counter[str] = Counter()
    for stat in growth:
        frames = _frames(stat.traceback)
        by_package[package(frames[0].filename)] += stat.size_diff
        ours = next((f for f in frames if short_path(f.filename).startswith("app/")), None)
        if ours is not None:
            by_our_line[f"{short_path(ours.filename)}:{ours.lineno}"] += stat.size_diff
    lines = [
        f"  traced growth: {total / per / 1024:.1f} KiB per stream "
        f"({total / 1024 / 1024:.1f} MiB; sites that grew: "
        f"{sum(s.size_diff for s in growth) / per / 1024:.1f} KiB per stream)",
        "  by the innermost frame's package (KiB per stream):",
    ]
    lines += [f"    {size / per / 1024:6.2f}  {name}" for name, size in by_package.most_common(12)]
    lines.append("  by the innermost line of app/ on the stack (KiB per stream):")
    lines += [
        f"    {size / per / 1024:6.2f}  {where}" for where, size in by_our_line.most_common(12)
    ]
    lines.append("  by allocation site (KiB and blocks per stream; innermost frame first):")
    for stat in sorted(growth, key=lambda s: s.size_diff, reverse=True)[:limit]:
        frames = _frames(stat.traceback)
        lines.append(
            f"    {stat.size_diff / per / 1024:6.2f} KiB {stat.count_diff / per:5.1f} blocks  "
            + " <- ".join(f"{short_path(f.filename)}:{f.lineno}" for f in frames[:6])
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--per", type=int, default=1, help="divide by this (streams open)")
    parser.add_argument("--top", type=int, default=25, help="allocation sites listed")
    args = parser.parse_args(argv)
    print("\n".join(top_holders(args.before, args.after, args.per, limit=args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
