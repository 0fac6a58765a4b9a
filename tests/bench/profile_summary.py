"""Where a server's CPU went, by component, from a py-spy `raw` profile (`make bench` --profile).

    python -m tests.bench.profile_summary <profile.txt> [--cpu-ms MS] [--top 15]

Each sample is put in the first component whose marker appears anywhere in its stack (the
order below matters: a title's model call counts as the title, a store write inside the
embedded MCP tool counts as the database). Samples of the idle loop are left out. With
--cpu-ms (the bench's measured CPU per turn) the shares are also given in ms per turn.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("title", ("app/agent/titles.py",)),
    ("admission (limits, preflight)", ("app/chat/admission.py", "app/store/usage.py")),
    ("logging", ("logging/__init__.py", "app/logging.py")),
    ("database", ("sqlalchemy/", "asyncpg/")),
    ("MCP (client, embedded server)", ("mcp/", "app/todo_mcp/", "app/tools/")),
    ("openai client", ("openai/",)),
    ("agents run loop", ("agents/",)),
    ("chatkit SDK", ("chatkit/",)),
    ("HTTP server", ("uvicorn/", "starlette/", "fastapi/", "h11/", "httptools")),
    ("HTTP client", ("httpx2/", "httpcore2/")),
    ("app", ("app/",)),
]


# Frames every stack of the server starts with; a stack that is only these is the idle loop.
_ROOT_FRAMES = (
    "server_probe.py",
    "app/__main__.py",
    "uvicorn/main.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "asyncio/runners.py",
)


def component(stack: str) -> str:
    for name, markers in COMPONENTS:
        if any(marker in stack for marker in markers):
            return name
    return "event loop, other"


def _root_frame(frame: str) -> bool:
    return any(marker in frame for marker in _ROOT_FRAMES)


def summarise(path: Path) -> tuple[Counter[str], Counter[str]]:
    """Samples per component, and per leaf function (for the top list)."""
    by_component: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame for frame in stack.split(";") if not _root_frame(frame)]
        if not frames:
            continue  # the event loop waiting for work
        samples = int(count)
        by_component[component(";".join(frames))] += samples
        by_leaf[stack.rsplit(";", 1)[-1]] += samples
    return by_component, by_leaf


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument(
        "--cpu-ms", type=float, help="measured CPU ms per turn, shared out by sample counts"
    )
    parser.add_argument("--top", type=int, default=15, help="leaf functions to list")
    args = parser.parse_args()
    by_component, by_leaf = summarise(args.profile)
    total = sum(by_component.values())
    per_turn = args.cpu_ms / total if args.cpu_ms else None
    print(f"{total} samples")
    for name, samples in by_component.most_common():
        line = f"  {name:<32} {100 * samples / total:5.1f} %"
        if per_turn is not None:
            line += f"  {samples * per_turn:6.2f} ms/turn"
        print(line)
    print("top leaf functions:")
    for leaf, samples in by_leaf.most_common(args.top):
        print(f"  {100 * samples / total:5.1f} %  {leaf}")


if __name__ == "__main__":
    main()
