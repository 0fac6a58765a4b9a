"""The rules an upload is held to, without a server: types, sizes, magic bytes, names."""

from __future__ import annotations

import pytest

from app.chat.attachment_checks import (
    AttachmentRules,
    check_content,
    check_declared,
    check_types_setting,
    clean_name,
    declared_type,
    normalize_mime,
)
from app.errors import BadRequestError, PayloadTooLargeError
from app.settings import DEFAULT_ATTACHMENT_TYPES, Settings, SettingsError, load_settings

RULES = AttachmentRules(max_bytes=100, types=frozenset(DEFAULT_ATTACHMENT_TYPES))
SAMPLES = {
    "image/png": b"\x89PNG\r\n\x1a\nrest",
    "image/jpeg": b"\xff\xd8\xff\xe0rest",
    "image/gif": b"GIF89arest",
    "image/webp": b"RIFF\x10\x00\x00\x00WEBPVP8 ",
    "application/pdf": b"%PDF-1.7\n",
    "text/plain": b"hello",
    "text/markdown": b"# title",
    "text/csv": b"a,b\n1,2\n",
}


def test_defaults_match_the_documented_list() -> None:
    settings = Settings()
    assert settings.attachments is True
    assert settings.attachment_max_bytes == 10_485_760
    assert sorted(settings.attachment_types) == sorted(SAMPLES)


@pytest.mark.parametrize(("mime_type", "data"), list(SAMPLES.items()))
def test_each_default_type_accepts_its_content(mime_type: str, data: bytes) -> None:
    check_content(RULES, mime_type=mime_type, data=data, declared_size=len(data))


@pytest.mark.parametrize("image", ["image/png", "image/jpeg", "image/gif", "image/webp"])
@pytest.mark.parametrize("other", ["image/png", "image/jpeg", "image/gif", "image/webp"])
def test_an_image_must_be_the_type_it_claims(image: str, other: str) -> None:
    if image == other:
        return
    with pytest.raises(BadRequestError, match="not a"):
        check_content(RULES, mime_type=image, data=SAMPLES[other], declared_size=None)


def test_refusals() -> None:
    with pytest.raises(BadRequestError, match="not accepted"):
        check_declared(RULES, mime_type="text/html", size=3)
    with pytest.raises(PayloadTooLargeError):
        check_declared(RULES, mime_type="text/plain", size=101)
    with pytest.raises(BadRequestError, match="empty"):
        check_declared(RULES, mime_type="text/plain", size=0)
    with pytest.raises(BadRequestError, match="declared"):
        check_content(RULES, mime_type="text/plain", data=b"abc", declared_size=4)
    with pytest.raises(PayloadTooLargeError):
        check_content(RULES, mime_type="text/plain", data=b"a" * 101, declared_size=101)
    with pytest.raises(BadRequestError, match="not a PDF"):
        check_content(RULES, mime_type="application/pdf", data=b"<html>", declared_size=None)
    with pytest.raises(BadRequestError, match="not text"):
        check_content(RULES, mime_type="text/csv", data=b"a\x00b", declared_size=None)
    check_content(RULES, mime_type="text/plain", data=b"a" * 100, declared_size=100)


def test_types_are_normalised_and_guessed_from_names() -> None:
    assert normalize_mime("Image/PNG; charset=binary") == "image/png"
    assert normalize_mime("not a type") == ""
    assert declared_type("", "notes.md") == "text/markdown"
    assert declared_type("application/octet-stream", "data.csv") == "text/csv"
    assert declared_type("image/png", "photo.jpg") == "image/png"  # the declaration wins


def test_names_lose_paths_and_control_characters() -> None:
    assert clean_name("C:\\Users\\me\\secret.txt") == "secret.txt"
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("a\x00b\u202ec.txt") == "abc.txt"
    assert clean_name("  ") == "file"
    assert len(clean_name("x" * 1000)) == 255


def test_types_setting_is_checked() -> None:
    assert check_types_setting(["text/plain", "application/json"]) == [
        "text/plain",
        "application/json",
    ]
    with pytest.raises(ValueError, match="supported image type"):
        check_types_setting(["image/svg+xml"])
    with pytest.raises(ValueError, match="media type"):
        check_types_setting(["png"])
    with pytest.raises(SettingsError, match="ATTACHMENT_TYPES"):
        load_settings(attachment_types="image/png, image/bmp")
    assert load_settings(attachment_types="text/plain , image/gif").attachment_types == [
        "text/plain",
        "image/gif",
    ]


def test_public_url_setting() -> None:
    assert load_settings(public_url="https://chat.example.com/").public_url == (
        "https://chat.example.com"
    )
    assert load_settings(public_url=" ").public_url is None
    with pytest.raises(SettingsError, match="PUBLIC_URL"):
        load_settings(public_url="chat.example.com")
