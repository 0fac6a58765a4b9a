"""A real Better Auth issuer (node, `better-auth` from npm) on loopback, driven from the tests."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from tests.client_tls import shared_tls
from tests.processes import terminate

logger = logging.getLogger(__name__)

ISSUER_DIR = Path(__file__).resolve().parent
SCRIPT = ISSUER_DIR / "issuer.mjs"
LOCK_FILE = ISSUER_DIR / "package-lock.json"
NODE_MODULES = ISSUER_DIR / "node_modules"
# Written after a successful `npm ci`: the lock file it installed, by hash.
INSTALL_STAMP = NODE_MODULES / ".installed-lock.sha256"
ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
# @noble/hashes (a better-auth dependency) declares node >= 20.19.
MIN_NODE_VERSION = (20, 19)
# The audience Better Auth puts in its session cookie-cache JWTs.
COOKIE_CACHE_AUDIENCE = "better-auth:session-cache"
COOKIE_CACHE_TYPE = "better-auth.session-cache+jwt"
SESSION_DATA_COOKIE = "better-auth.session_data"
_READY = re.compile(rb"^READY (\d+)$", re.MULTILINE)


class IssuerSetupError(RuntimeError):
    """node/npm are missing or the issuer could not be installed or started."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise IssuerSetupError(
            f"`{name}` is not on PATH: the Better Auth interop tests need Node.js >= "
            f"{_dotted(MIN_NODE_VERSION)} and npm (install the `nodejs` and `npm` packages)"
        )
    return path


def node_binary() -> str:
    """Path of a node new enough for better-auth; IssuerSetupError otherwise."""
    node = _tool("node")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    match = re.match(r"v(\d+)\.(\d+)\.", version)
    if match is None or (int(match.group(1)), int(match.group(2))) < MIN_NODE_VERSION:
        raise IssuerSetupError(
            f"node {version} is too old: the Better Auth interop tests need >= "
            f"{_dotted(MIN_NODE_VERSION)}"
        )
    return node


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def _lock_digest() -> str:
    return hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()


def _installed() -> bool:
    return INSTALL_STAMP.is_file() and INSTALL_STAMP.read_text().strip() == _lock_digest()


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    # Two pytest sessions at once must not run `npm ci` into the same node_modules.
    name = hashlib.sha256(str(ISSUER_DIR).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"better-auth-issuer-{name}.lock"
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_installed(timeout: float = 600.0) -> float:
    """`npm ci` from package-lock.json unless node_modules already holds that lock.

    Returns the seconds spent installing (0.0 when nothing had to be done).
    """
    node_binary()
    npm = _tool("npm")
    if _installed():
        return 0.0
    with _install_lock():
        if _installed():
            return 0.0
        started = time.monotonic()
        # The project .npmrc next to package.json keeps registry addresses out of the lock.
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=ISSUER_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "npm_config_update_notifier": "false"},
        )
        if result.returncode != 0:
            raise IssuerSetupError(
                f"`npm ci` in {ISSUER_DIR} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
            )
        INSTALL_STAMP.write_text(_lock_digest() + "\n")
        elapsed = time.monotonic() - started
        logger.info("better_auth.npm_ci", extra={"seconds": round(elapsed, 2)})
        return elapsed


@dataclass(frozen=True, slots=True)
class Account:
    """A Better Auth user the tests signed up, with the session its sign-up (or sign-in) opened."""

    user_id: str
    email: str
    password: str
    # The session's cookies as a browser holds them: its token and the cookie-cache JWT.
    cookies: Mapping[str, str] = field(default_factory=dict, repr=False)

    def session_cookie_cache_token(self) -> str:
        """The session cookie-cache JWT (`better-auth.session_data`) Better Auth set.

        The issuer runs with `session.cookieCache.strategy = "jwt"` and
        `jwt({sessionCookieCache: true})`, so this cookie is signed with the access-token key.
        """
        if SESSION_DATA_COOKIE in self.cookies:
            return self.cookies[SESSION_DATA_COOKIE]
        # A large value is split into `<name>.0`, `<name>.1`, ...
        chunks: list[str] = []
        while f"{SESSION_DATA_COOKIE}.{len(chunks)}" in self.cookies:
            chunks.append(self.cookies[f"{SESSION_DATA_COOKIE}.{len(chunks)}"])
        if not chunks:
            raise AssertionError(f"no {SESSION_DATA_COOKIE} cookie: {sorted(self.cookies)}")
        return "".join(chunks)


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """Options of the Better Auth `jwt` plugin the issuer runs with (None: Better Auth's default).

    `algorithm` -> `jwks.keyPairConfig.alg`; `jwt_issuer`/`jwt_audience`/`expiration` ->
    `jwt.issuer`/`jwt.audience`/`jwt.expirationTime` (defaults: the base URL, the base URL,
    15 minutes); `rotation_seconds` -> `jwks.rotationInterval` (default: no rotation).
    """

    algorithm: str = "EdDSA"
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    expiration: str | None = None
    rotation_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unsupported algorithm {self.algorithm!r}; use one of {ALGORITHMS}")

    def environment(self) -> dict[str, str]:
        """The ISSUER_* variables issuer.mjs reads."""
        values = {
            "ISSUER_JWT_ALG": self.algorithm,
            "ISSUER_JWT_ISSUER": self.jwt_issuer,
            "ISSUER_JWT_AUDIENCE": self.jwt_audience,
            "ISSUER_JWT_EXPIRATION": self.expiration,
            "ISSUER_JWKS_ROTATION_SECONDS": (
                str(self.rotation_seconds) if self.rotation_seconds is not None else None
            ),
        }
        return {name: value for name, value in values.items() if value is not None}


@dataclass
class BetterAuthIssuer:
    """Better Auth in memory with email+password and the `jwt` plugin, in `node issuer.mjs`.

    `start()` starts a node process for this issuer; `add_issuer()` starts another issuer (its
    own users, sessions and keys) inside the same process, which costs no node start.
    """

    log_path: Path
    config: IssuerConfig = field(default_factory=IssuerConfig)
    port: int | None = None
    startup_seconds: float | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def algorithm(self) -> str:
        return self.config.algorithm

    @property
    def base_url(self) -> str:
        """Better Auth's `baseURL`: the default `iss` and `aud` of its tokens."""
        if self.port is None:
            raise RuntimeError("the issuer is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/api/auth/jwks"

    @property
    def issuer(self) -> str:
        """The `iss` of the access tokens (AUTH_ISSUER)."""
        return self.config.jwt_issuer or self.base_url

    @property
    def audience(self) -> str:
        """The `aud` of the access tokens (AUTH_AUDIENCE)."""
        return self.config.jwt_audience or self.base_url

    def start(self, timeout: float = 60.0) -> None:
        """Start node and wait for its `READY <port>` line."""
        node = node_binary()
        if not NODE_MODULES.is_dir():
            raise IssuerSetupError(f"{NODE_MODULES} is missing: call ensure_installed() first")
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("ISSUER_", "BETTER_AUTH_"))
        }
        env.update(self.config.environment())
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            # Output goes to a file: nobody would drain a pipe once the issuer is up.
            self.process = subprocess.Popen(
                [node, str(SCRIPT), "0"], cwd=ISSUER_DIR, env=env, stdout=log, stderr=log
            )
        deadline = started + timeout
        while time.monotonic() < deadline:
            match = _READY.search(self.log_path.read_bytes())
            if match is not None:
                self.port = int(match.group(1))
                self.startup_seconds = time.monotonic() - started
                logger.info(
                    "better_auth.started",
                    extra={"algorithm": self.algorithm, "seconds": self.startup_seconds},
                )
                return
            if self.process.poll() is not None:
                raise IssuerSetupError(f"the Better Auth issuer exited early:\n{self.logs()}")
            time.sleep(0.05)
        self.stop()
        raise IssuerSetupError(
            f"the Better Auth issuer did not start in {timeout}s:\n{self.logs()}"
        )

    def add_issuer(self, config: IssuerConfig, timeout: float = 60.0) -> BetterAuthIssuer:
        """Another issuer with `config` in this issuer's node process (`POST /test/issuers`)."""
        started = time.monotonic()
        try:
            response = httpx2.post(
                f"{self.base_url}/test/issuers",
                json=config.environment(),
                timeout=timeout,
                verify=shared_tls(),
            )
            _expect_ok(response)
        except (httpx2.HTTPError, AssertionError) as exc:
            raise IssuerSetupError(f"no issuer added: {exc}\n{self.logs()}") from exc
        return BetterAuthIssuer(
            log_path=self.log_path,
            config=config,
            port=int(response.json()["port"]),
            startup_seconds=time.monotonic() - started,
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the node process this issuer started (and the issuers added to it)."""
        if self.process is None:
            return
        terminate(self.process, timeout)
        self.process = None
        self.port = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def _client(self, account: Account | None = None) -> httpx2.AsyncClient:
        """A client to this issuer; with `account`, holding that account's session cookies."""
        return httpx2.AsyncClient(
            base_url=self.base_url,
            timeout=30,
            verify=shared_tls(),
            cookies=dict(account.cookies) if account is not None else None,
        )

    async def create_account(self, name: str = "Test User") -> Account:
        """Sign up a fresh user (unique email) with email + password.

        Better Auth signs a new user in: the account holds that session, so its tokens cost no
        second password hash (scrypt, the slowest step here) the way a sign-in would.
        """
        email = f"{os.urandom(6).hex()}@example.test"
        password = os.urandom(12).hex()
        async with self._client() as http:
            response = await http.post(
                "/api/auth/sign-up/email", json={"email": email, "password": password, "name": name}
            )
            _expect_ok(response)
            cookies = _cookies_of(http)
        return Account(str(response.json()["user"]["id"]), email, password, cookies)

    async def sign_in(self, account: Account) -> Account:
        """Sign in with the account's email and password: the same user with a new session."""
        async with self._client() as http:
            response = await http.post(
                "/api/auth/sign-in/email",
                json={"email": account.email, "password": account.password},
            )
            _expect_ok(response)
            cookies = _cookies_of(http)
        return Account(str(response.json()["user"]["id"]), account.email, account.password, cookies)

    async def access_token(self, account: Account) -> str:
        """An access token from `GET /api/auth/token`, with the account's session."""
        async with self._client(account) as http:
            response = await http.get("/api/auth/token")
        _expect_ok(response)
        return str(response.json()["token"])

    async def session_header_token(self, account: Account) -> str:
        """The `set-auth-jwt` header of `GET /api/auth/get-session` with the account's session."""
        async with self._client(account) as http:
            response = await http.get("/api/auth/get-session")
        _expect_ok(response)
        return response.headers["set-auth-jwt"]

    async def jwks(self) -> dict[str, Any]:
        async with self._client() as http:
            response = await http.get("/api/auth/jwks")
        _expect_ok(response)
        document: dict[str, Any] = response.json()
        return document

    async def rotate_key(self) -> str:
        """Add a new signing key, as the plugin's rotation does; returns its kid."""
        async with self._client() as http:
            response = await http.post("/test/rotate-key", json={})
        _expect_ok(response)
        return str(response.json()["kid"])

    async def sign(
        self, payload: Mapping[str, Any], *, override_options: Mapping[str, Any] | None = None
    ) -> str:
        """Sign `payload` with the plugin's own signJWT and current key (iss/aud/exp default)."""
        body: dict[str, Any] = {"payload": dict(payload)}
        if override_options is not None:
            body["overrideOptions"] = dict(override_options)
        async with self._client() as http:
            response = await http.post("/test/sign", content=json.dumps(body))
        _expect_ok(response)
        return str(response.json()["token"])


def _cookies_of(http: httpx2.AsyncClient) -> dict[str, str]:
    return {cookie.name: cookie.value or "" for cookie in http.cookies.jar}


def _expect_ok(response: httpx2.Response) -> None:
    if response.status_code != 200:
        raise AssertionError(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code}: {response.text[:500]}"
        )
