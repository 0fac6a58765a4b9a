"""Signed preview links: bound to one attachment, expiring, and the same in every process."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from app.chat.preview_links import EXPIRY_STEP_SECONDS, PreviewLinks

NOW = 1_800_000_000.0


async def key() -> bytes:
    return b"k" * 32


def parts(url: str) -> tuple[str, int, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return split.path, int(query["exp"][0]), query["sig"][0]


async def test_a_link_verifies_only_for_its_attachment_until_it_expires() -> None:
    links = PreviewLinks(key, lifetime=3600)
    url = await links.url("atc_1", "https://chat.example.com", now=NOW)
    path, expires, sig = parts(url)
    assert url.startswith("https://chat.example.com/api/chatkit/attachments/atc_1/preview?")
    assert path == "/api/chatkit/attachments/atc_1/preview"
    assert NOW + 3600 <= expires <= NOW + 3600 + EXPIRY_STEP_SECONDS

    assert await links.verify("atc_1", expires, sig, now=NOW)
    assert await links.verify("atc_1", expires, sig, now=expires - 1)
    assert not await links.verify("atc_1", expires, sig, now=expires + 1)
    assert not await links.verify("atc_2", expires, sig, now=NOW)
    assert not await links.verify("atc_1", expires + 1, sig, now=NOW)
    assert not await links.verify("atc_1", expires, sig[:-1] + "A", now=NOW)
    assert not await links.verify("atc_1", expires, "é", now=NOW)


async def test_links_are_stable_for_a_while_and_shared_by_processes() -> None:
    first, second = PreviewLinks(key), PreviewLinks(key)  # two processes, one stored key
    a = await first.url("atc_1", "http://h", now=NOW)
    assert await first.url("atc_1", "http://h", now=NOW + 1) == a  # cacheable
    _, expires, sig = parts(a)
    assert await second.verify("atc_1", expires, sig, now=NOW)


async def test_another_key_refuses_the_link() -> None:
    async def other() -> bytes:
        return b"o" * 32

    _, expires, sig = parts(await PreviewLinks(key).url("atc_1", "http://h", now=NOW))
    assert not await PreviewLinks(other).verify("atc_1", expires, sig, now=NOW)


async def test_a_far_future_expiry_is_refused() -> None:
    links = PreviewLinks(key, lifetime=60)
    assert not await links.verify("atc_1", int(NOW) + 10 * 86400, "x", now=NOW)
