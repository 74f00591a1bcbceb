"""Uploaded images are checked by content (not by name or declared type) before any paid call."""

from __future__ import annotations

import io
import warnings

from pydantic import BaseModel

from connectors.errors import UserInputError

MB = 1024 * 1024
ALLOWED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


class CheckedImage(BaseModel):
    data: bytes
    mime_type: str
    width: int
    height: int


def megabytes(size: int) -> str:
    """``10 MB``, ``1.5 MB``, ``25.0 MB``: a size as users read it (whole limits without a decimal)."""
    value = size / MB
    return f"{value:.0f} MB" if value.is_integer() else f"{value:.1f} MB"


def image_too_large(max_bytes: int, size: int | None = None) -> UserInputError:
    """The refusal for an upload over ``max_bytes``; ``size`` when it is known (declared or read)."""
    limit = megabytes(max_bytes)
    if size is None:
        return UserInputError(f"The image is over the {limit} limit. Please send a smaller image.")
    shown = f"{size / MB:.1f} MB"
    if round(size / MB, 1) <= max_bytes / MB:  # "10.0 MB; the limit is 10 MB" would read as allowed
        shown = f"more than {limit}"
    return UserInputError(f"The image is {shown}; the limit is {limit}.")


def check_image(data: bytes, *, max_bytes: int, max_pixels: int) -> CheckedImage:
    """Return the image's type and size, or raise ``UserInputError`` saying what is wrong with it.

    The pixel count is read from the header before anything is decoded, so a decompression bomb is
    refused without allocating it.
    """
    if not data:
        raise UserInputError("The image is empty (0 bytes). Please send the picture again.")
    if len(data) > max_bytes:
        raise image_too_large(max_bytes, len(data))
    from PIL import Image, UnidentifiedImageError  # loaded on the first image, not by every bot process

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = image.format or ""
                width, height = image.size
                if width * height > max_pixels:
                    raise UserInputError(
                        f"The image is {width}×{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels."
                    )
                image.verify()
    except UserInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserInputError("The image is too large to process (too many pixels).") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserInputError("That file is not an image I can read. Please send a PNG, JPEG or WebP.") from exc
    if fmt not in ALLOWED_FORMATS:
        raise UserInputError(f"{fmt or 'That'} images are not supported. Please send a PNG, JPEG or WebP.")
    return CheckedImage(data=data, mime_type=ALLOWED_FORMATS[fmt], width=width, height=height)
