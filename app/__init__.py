"""ChatKit agent server: an authenticated ChatKit backend with a TODO task agent."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chatkit-agent-server")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0"
