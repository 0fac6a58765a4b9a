"""Real Better Auth issuers (node) for the interop tests: one node process per session, serving
one Better Auth instance per configuration (and one more per test that needs its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from app.auth.base import TokenVerifier
from app.auth.factory import build_verifier
from app.settings import Settings
from tests.better_auth.issuer import (
    BetterAuthIssuer,
    IssuerConfig,
    IssuerSetupError,
    ensure_installed,
)
from tests.client_tls import shared_tls

UNSET = "<unset>"


@dataclass
class IssuerTimings:
    """How long setup took, shown in the terminal summary."""

    npm_ci_seconds: float | None = None
    node_start: tuple[str, float] | None = None
    # Issuers added to the running node process.
    added: list[tuple[str, float]] = field(default_factory=list)


TIMINGS = pytest.StashKey[IssuerTimings]()


class IssuerPool:
    """Starts issuers on demand; shared ones are cached by configuration, all stop at the end.

    The first issuer starts the node process; every later one is another Better Auth instance
    in that process (`BetterAuthIssuer.add_issuer`): its own users, sessions and keys, no node
    start of its own.
    """

    def __init__(self, log_dir: Path, timings: IssuerTimings) -> None:
        self._log_dir = log_dir
        self._timings = timings
        self._shared: dict[IssuerConfig, BetterAuthIssuer] = {}
        self._process: BetterAuthIssuer | None = None

    def shared(self, config: IssuerConfig | None = None) -> BetterAuthIssuer:
        """An issuer other tests use too: never rotate its key or change its state."""
        config = config or IssuerConfig()
        if config not in self._shared:
            self._shared[config] = self.new(config)
        return self._shared[config]

    def new(self, config: IssuerConfig | None = None) -> BetterAuthIssuer:
        """A fresh issuer of the caller's own (e.g. to rotate its key)."""
        config = config or IssuerConfig()
        try:
            if self._process is None:
                issuer = BetterAuthIssuer(log_path=self._log_dir / "issuers.log", config=config)
                self._process = issuer
                issuer.start()
            else:
                issuer = self._process.add_issuer(config)
        except IssuerSetupError as exc:
            pytest.fail(str(exc), pytrace=False)
        assert issuer.startup_seconds is not None
        timing = (config.algorithm, issuer.startup_seconds)
        if issuer is self._process:
            self._timings.node_start = timing
        else:
            self._timings.added.append(timing)
        return issuer

    def stop_all(self) -> None:
        if self._process is not None:
            self._process.stop()


@pytest.fixture(scope="session")
def better_auth_timings(request: pytest.FixtureRequest) -> IssuerTimings:
    timings = IssuerTimings()
    request.config.stash[TIMINGS] = timings
    return timings


@pytest.fixture(scope="session")
def better_auth_installed(better_auth_timings: IssuerTimings) -> None:
    """`npm ci` into tests/better_auth/node_modules when needed; fails (never skips) without npm."""
    try:
        better_auth_timings.npm_ci_seconds = ensure_installed()
    except IssuerSetupError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def issuers(
    better_auth_installed: None,
    better_auth_timings: IssuerTimings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[IssuerPool]:
    pool = IssuerPool(tmp_path_factory.mktemp("better-auth"), better_auth_timings)
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def better_auth(issuers: IssuerPool) -> BetterAuthIssuer:
    """The default configuration: EdDSA, iss = aud = baseURL, 15-minute tokens."""
    return issuers.shared(IssuerConfig())


VerifierFactory = Callable[..., TokenVerifier]


@pytest.fixture
async def make_verifier(tmp_path: Path) -> AsyncIterator[VerifierFactory]:
    """Verifiers built the way the server builds them (`build_verifier(Settings)`), closed after.

    They fetch keys through one client of the test's (the suite's shared SSL context): a client
    of their own would load the CA bundle again for each verifier.
    """
    verifiers: list[TokenVerifier] = []
    http = httpx2.AsyncClient(verify=shared_tls())

    def factory(
        issuer: BetterAuthIssuer,
        *,
        algorithms: list[str] | None = None,
        audience: str | None = UNSET,
        issuer_claim: str | None = UNSET,
        **values: Any,
    ) -> TokenVerifier:
        settings = Settings(
            _env_file=None,
            data_dir=tmp_path / "data",
            auth_jwt_secret=None,
            auth_jwks_url=issuer.jwks_url,
            auth_issuer=issuer.issuer if issuer_claim == UNSET else issuer_claim,
            auth_audience=issuer.audience if audience == UNSET else audience,
            auth_algorithms=algorithms or [issuer.algorithm],
            **values,
        )
        verifier = build_verifier(settings, http_client=http)
        verifiers.append(verifier)
        return verifier

    yield factory
    for verifier in verifiers:
        await verifier.aclose()
    await http.aclose()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    timings = config.stash.get(TIMINGS, None)
    if timings is None:
        return
    if timings.npm_ci_seconds is None:
        install = "not installed"
    elif timings.npm_ci_seconds == 0:
        install = "already installed"
    else:
        install = f"npm ci {timings.npm_ci_seconds:.1f}s"
    if timings.node_start is None:
        start = "none"
    else:
        start = f"{timings.node_start[0]} {timings.node_start[1]:.2f}s"
    added = ", ".join(f"{alg} {seconds:.2f}s" for alg, seconds in timings.added)
    terminalreporter.write_line(
        f"better-auth issuers: {install}; node start: {start}; added: {added or 'none'}"
    )
