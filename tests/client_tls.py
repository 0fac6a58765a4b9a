"""One SSL context for the test suite's HTTP clients.

httpx builds a new default SSL context for every client, loading the CA bundle each time: about
30 ms of CPU per client, hundreds of times per run, although tests talk plain HTTP on loopback.
Clients made with `verify=shared_tls()` reuse one context (the same default one: nothing is
verified less).
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def shared_tls() -> ssl.SSLContext:
    return ssl.create_default_context()
