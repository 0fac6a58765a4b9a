"""A Node.js project of this repository: installed by `npm ci` from its lock file, run by tests."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class NodeUnavailable(RuntimeError):
    """node or npm is missing, or node is older than the project needs."""


@dataclass(frozen=True)
class Toolchain:
    node: str
    npm: str
    version: str


def find_toolchain(minimum: tuple[int, int]) -> Toolchain:
    """node and npm from PATH, node at least `minimum`; NodeUnavailable otherwise."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if not path)
        raise NodeUnavailable(f"{missing} not on PATH")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    match = re.match(r"v(\d+)\.(\d+)\.", version)
    if match is None or (int(match.group(1)), int(match.group(2))) < minimum:
        raise NodeUnavailable(f"node {version} is older than {minimum[0]}.{minimum[1]}")
    return Toolchain(node=node, npm=npm, version=version)


@dataclass(frozen=True)
class CommandResult:
    args: Sequence[str]
    returncode: int
    output: str
    seconds: float

    def explain(self) -> str:
        command = " ".join(self.args)
        return (
            f"`{command}` exited {self.returncode} after {self.seconds:.1f}s:\n"
            f"{self.output[-8000:]}"
        )


@dataclass(frozen=True)
class NodeProject:
    """A folder with package.json, package-lock.json and an .npmrc of its own."""

    directory: Path
    toolchain: Toolchain

    @property
    def _stamp(self) -> Path:
        # Written after a successful `npm ci`: the lock file it installed, by hash.
        return self.directory / "node_modules" / ".installed-lock.sha256"

    def _lock_digest(self) -> str:
        return hashlib.sha256((self.directory / "package-lock.json").read_bytes()).hexdigest()

    def installed(self) -> bool:
        return self._stamp.is_file() and self._stamp.read_text().strip() == self._lock_digest()

    @contextlib.contextmanager
    def _lock(self, purpose: str) -> Iterator[None]:
        name = hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"node-project-{name}-{purpose}.lock"
        with path.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _install_lock(self) -> contextlib.AbstractContextManager[None]:
        # Two pytest sessions at once must not run `npm ci` into the same node_modules.
        return self._lock("npm-ci")

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Held while a test builds or runs the project: build output lives in its folder."""
        return self._lock("use")

    def ensure_installed(self, timeout: float = 900.0) -> CommandResult | None:
        """`npm ci` unless node_modules already holds this lock file; None when nothing ran."""
        if self.installed():
            return None
        with self._install_lock():
            if self.installed():
                return None
            # The project's .npmrc keeps registry addresses out of the lock file.
            result = self.run(
                [self.toolchain.npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                timeout=timeout,
            )
            if result.returncode == 0:
                self._stamp.write_text(self._lock_digest() + "\n")
            return result

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 600.0,
    ) -> CommandResult:
        """Run a command in the project folder; output (stdout and stderr) is kept."""
        started = time.monotonic()
        try:
            completed = subprocess.run(
                list(args),
                cwd=self.directory,
                env={**base_environment(), **(env or {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.output if isinstance(exc.output, str) else ""
            return CommandResult(args, -1, f"timed out after {timeout}s\n{output}", timeout)
        return CommandResult(
            args, completed.returncode, completed.stdout, time.monotonic() - started
        )

    def bin(self, name: str) -> str:
        """A tool the project installed (node_modules/.bin/<name>)."""
        return str(self.directory / "node_modules" / ".bin" / name)


def base_environment() -> dict[str, str]:
    """The test's environment without settings that would change the example's behaviour."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BETTER_AUTH_", "NEXT_", "AUTH_", "STARTER_", "NODE_OPTIONS"))
    }
    env.update(
        {
            "NEXT_TELEMETRY_DISABLED": "1",
            "npm_config_update_notifier": "false",
        }
    )
    return env
