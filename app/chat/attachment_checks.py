"""What an attachment must be before it is stored: an allowed type, a size within the limit,
and content that is what its type says (images by their magic bytes, no Pillow needed)."""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from app.errors import BadRequestError, PayloadTooLargeError

MAX_NAME_CHARS = 255
DEFAULT_NAME = "file"
# Images the server can recognise (and the ChatKit iframe and the models can show).
IMAGE_SIGNATURES: dict[str, Callable[[bytes], bool]] = {
    "image/png": lambda data: data.startswith(b"\x89PNG\r\n\x1a\n"),
    "image/jpeg": lambda data: data.startswith(b"\xff\xd8\xff"),
    "image/gif": lambda data: data[:6] in (b"GIF87a", b"GIF89a"),
    "image/webp": lambda data: len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP",
}
# A PDF's header may follow a little junk; readers look within the first kilobyte.
PDF_HEADER_WINDOW = 1024
# Types sent to the model as plain text.
TEXT_LIKE = frozenset({"application/json", "application/xml", "application/x-yaml"})
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


@dataclass(frozen=True, slots=True)
class AttachmentRules:
    """The limits uploads are held to (ATTACHMENT_MAX_BYTES, ATTACHMENT_TYPES)."""

    max_bytes: int
    types: frozenset[str]


def normalize_mime(value: str) -> str:
    """`Image/PNG; charset=x` -> `image/png`; anything unparsable -> empty."""
    base = value.split(";", 1)[0].strip().lower()
    return base if _MIME.match(base) else ""


def is_image(mime_type: str) -> bool:
    return mime_type in IMAGE_SIGNATURES


def is_text(mime_type: str) -> bool:
    return mime_type.startswith("text/") or mime_type in TEXT_LIKE


def check_types_setting(types: Iterable[str]) -> list[str]:
    """Validate ATTACHMENT_TYPES: media types, and only images the server can recognise."""
    checked = []
    for value in types:
        mime = normalize_mime(value)
        if not mime or mime != value.strip().lower():
            raise ValueError(f"{value!r} is not a media type like image/png")
        if mime.startswith("image/") and not is_image(mime):
            supported = ", ".join(sorted(IMAGE_SIGNATURES))
            raise ValueError(f"{mime} is not a supported image type ({supported})")
        checked.append(mime)
    return checked


def clean_name(name: str) -> str:
    """A file name safe to show and store: no path, no control characters, bounded length."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:MAX_NAME_CHARS] or DEFAULT_NAME


def declared_type(mime_type: str | None, name: str) -> str:
    """The media type a client declared, or guessed from the name when it sent none."""
    mime = normalize_mime(mime_type or "")
    if mime in ("", "application/octet-stream"):
        guessed, _ = mimetypes.guess_type(name, strict=False)
        mime = normalize_mime(guessed or "") or mime
    return mime


def check_declared(rules: AttachmentRules, *, mime_type: str, size: int) -> None:
    """Refuse a type that is not allowed (400) or a size over the limit (413)."""
    if mime_type not in rules.types:
        allowed = ", ".join(sorted(rules.types))
        shown = mime_type or "unknown"
        raise BadRequestError(f"Files of type {shown} are not accepted; allowed: {allowed}.")
    if size > rules.max_bytes:
        raise PayloadTooLargeError(f"An attachment may be at most {rules.max_bytes} bytes.")
    if size <= 0:
        raise BadRequestError("The file is empty.")


def check_content(
    rules: AttachmentRules, *, mime_type: str, data: bytes, declared_size: int | None
) -> None:
    """Refuse bytes that break the limits, differ from the declared size, or are not their type."""
    check_declared(rules, mime_type=mime_type, size=len(data))
    if declared_size is not None and declared_size != len(data):
        raise BadRequestError(
            f"The upload has {len(data)} bytes but {declared_size} were declared."
        )
    if is_image(mime_type) and not IMAGE_SIGNATURES[mime_type](data):
        raise BadRequestError(f"The file is not a {mime_type.split('/')[1].upper()} image.")
    if mime_type == "application/pdf" and b"%PDF-" not in data[:PDF_HEADER_WINDOW]:
        raise BadRequestError("The file is not a PDF document.")
    if is_text(mime_type) and b"\x00" in data:
        raise BadRequestError("The file is not text.")
