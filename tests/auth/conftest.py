"""Auth fixtures: signing keys for every supported algorithm and a real JWKS server on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from app.auth.jwks import JwksCache
from app.auth.jwks_verifier import JwksVerifier
from tests.client_tls import shared_tls

ISSUER = "https://auth.example.test"
AUDIENCE = "https://api.example.test"
ALL_ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
DROP = object()  # a claim/header value meaning "leave this member out"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def now() -> int:
    return int(time.time())


def claims(**overrides: Any) -> dict[str, Any]:
    """Good claims for ISSUER/AUDIENCE; `name=DROP` removes a claim."""
    issued = now()
    base: dict[str, Any] = {
        "sub": "alice",
        "iat": issued,
        "exp": issued + 900,
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not DROP}


@dataclass(frozen=True)
class IssuerKey:
    """A private signing key of one algorithm, with its public JWK."""

    alg: str
    kid: str
    private_key: Any = field(repr=False)

    def public_jwk(self, **members: Any) -> dict[str, Any]:
        public = self.private_key.public_key()
        if self.alg == "EdDSA":
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        elif self.alg.startswith("ES"):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": self.alg})
        jwk.update(members)
        return {name: value for name, value in jwk.items() if value is not DROP}

    def sign(self, payload: dict[str, Any], **header: Any) -> str:
        """A compact JWS of `payload`; header members default to this key's alg and kid."""
        full = {"alg": self.alg, "typ": "JWT", "kid": self.kid}
        full.update(header)
        full = {name: value for name, value in full.items() if value is not DROP}
        return compact(full, payload, lambda data: self.raw_sign(data))

    def raw_sign(self, data: bytes) -> bytes:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        return algorithm.sign(data, self.private_key)


def compact(header: dict[str, Any], payload: Any, signer: Callable[[bytes], bytes]) -> str:
    """Build header.payload.signature by hand, so tests can forge anything."""
    payload_bytes = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64json(header)}.{b64url(payload_bytes)}".encode()
    return f"{signing_input.decode()}.{b64url(signer(signing_input))}"


def new_key(alg: str, kid: str | None = None) -> IssuerKey:
    if alg == "EdDSA":
        private: Any = ed25519.Ed25519PrivateKey.generate()
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg == "ES512":
        private = ec.generate_private_key(ec.SECP521R1())
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return IssuerKey(
        alg=alg, kid=kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}", private_key=private
    )


@pytest.fixture(scope="session")
def keys() -> dict[str, IssuerKey]:
    """The issuer's keys, one per algorithm."""
    return {alg: new_key(alg) for alg in ALL_ALGORITHMS}


@pytest.fixture(scope="session")
def attacker_key() -> IssuerKey:
    """An Ed25519 key the issuer never published."""
    return new_key("EdDSA", kid="attacker")


# --- a real JWKS server --------------------------------------------------------------------


@dataclass
class EndpointState:
    document: Any = field(default_factory=lambda: {"keys": []})
    status: int = 200
    delay: float = 0.0
    hits: int = 0


class JwksServer:
    """uvicorn on a loopback port, serving one mutable JWKS document per path `/jwks/<name>`."""

    def __init__(self) -> None:
        self._endpoints: dict[str, EndpointState] = {}
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self._app, interface="asgi3", log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("JWKS server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def endpoint(self) -> JwksEndpoint:
        name = uuid.uuid4().hex
        with self._lock:
            self._endpoints[name] = EndpointState()
        return JwksEndpoint(self, name)

    def state(self, name: str) -> EndpointState:
        return self._endpoints[name]

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        prefix = "/jwks/"
        name = scope["path"][len(prefix) :] if scope["path"].startswith(prefix) else ""
        with self._lock:
            state = self._endpoints.get(name)
            if state is not None:
                state.hits += 1
                delay, status = state.delay, state.status
                document = state.document
        if state is None:
            status, body = 404, b'{"error":"not found"}'
        else:
            if delay:
                await asyncio.sleep(delay)
            body = document if isinstance(document, bytes) else json.dumps(document).encode()
            if status != 200:
                body = b'{"error":"unavailable"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class JwksEndpoint:
    """One JWKS document on the server; tests publish keys and count fetches."""

    def __init__(self, server: JwksServer, name: str) -> None:
        self._server = server
        self.name = name
        self.url = f"http://127.0.0.1:{server.port}/jwks/{name}"

    @property
    def _state(self) -> EndpointState:
        return self._server.state(self.name)

    def publish(self, *keys: IssuerKey | dict[str, Any]) -> None:
        jwks = [key.public_jwk() if isinstance(key, IssuerKey) else key for key in keys]
        self._state.document = {"keys": jwks}

    def serve_raw(self, document: Any) -> None:
        self._state.document = document

    def fail(self, status: int = 503) -> None:
        self._state.status = status

    def recover(self) -> None:
        self._state.status = 200

    def slow(self, seconds: float) -> None:
        self._state.delay = seconds

    @property
    def hits(self) -> int:
        return self._state.hits


@pytest.fixture(scope="session")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def jwks(jwks_server: JwksServer, keys: dict[str, IssuerKey]) -> JwksEndpoint:
    """A fresh JWKS document of this test, publishing the issuer's keys."""
    endpoint = jwks_server.endpoint()
    endpoint.publish(*keys.values())
    return endpoint


class FakeClock:
    """A monotonic clock tests move by hand."""

    def __init__(self) -> None:
        self.value = 1_000.0

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


MakeVerifier = Callable[..., JwksVerifier]


@pytest.fixture
async def make_verifier(jwks: JwksEndpoint) -> AsyncIterator[MakeVerifier]:
    """Build JwksVerifiers (closed at teardown); defaults: this test's endpoint, all algorithms."""
    created: list[JwksVerifier] = []
    # One client for the test's caches (each would build an SSL context of its own, ~30 ms).
    http = httpx2.AsyncClient(verify=shared_tls())

    def make(
        *,
        url: str | None = None,
        algorithms: tuple[str, ...] = ALL_ALGORITHMS,
        issuer: str | None = ISSUER,
        audience: str | None = AUDIENCE,
        max_lifetime_seconds: int = 86_400,
        **cache_options: Any,
    ) -> JwksVerifier:
        cache_options.setdefault("client", http)
        cache = JwksCache(url or jwks.url, **cache_options)
        verifier = JwksVerifier(
            cache,
            algorithms=algorithms,
            issuer=issuer,
            audience=audience,
            max_lifetime_seconds=max_lifetime_seconds,
        )
        created.append(verifier)
        return verifier

    yield make
    for verifier in created:
        await verifier.aclose()
    await http.aclose()


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
