"""Timings of the example projects' steps, shown in the terminal summary."""

from __future__ import annotations

import pytest

STEP_SECONDS = pytest.StashKey[dict[str, float]]()


@pytest.fixture(scope="session")
def example_timings(request: pytest.FixtureRequest) -> dict[str, float]:
    """Record `step -> seconds` here; the summary prints them."""
    return request.config.stash.setdefault(STEP_SECONDS, {})


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    timings = config.stash.get(STEP_SECONDS, None)
    if timings:
        steps = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in timings.items())
        terminalreporter.write_line(f"examples/nextjs: {steps}")
