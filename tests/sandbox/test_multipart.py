"""The fakes' form-data parser reads what aiohttp (discord.py's and our Telegram transport) writes."""

from __future__ import annotations

import json

import aiohttp

from tests.fakes.multipart import header_parameters, parse_form_data


async def test_parts_written_by_aiohttp_come_back_byte_for_byte() -> None:
    image = b"\xff\xd8\xff\r\n\r\n--not-a-boundary\r\n" + bytes(range(256)) * 400 + b"\r\n"
    form = aiohttp.FormData()
    form.add_field("payload_json", json.dumps({"content": "héllo"}), content_type="application/json")
    form.add_field("files[0]", image, filename="storyboard.jpg", content_type="image/jpeg")
    form.add_field("caption", "plain field")
    writer = form()
    body = await writer.as_bytes()
    parts = parse_form_data(writer.content_type, body)
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("payload_json", None, "application/json"),
        ("files[0]", "storyboard.jpg", "image/jpeg"),
        ("caption", None, "text/plain"),
    ]
    assert json.loads(parts[0].data) == {"content": "héllo"}
    assert parts[1].data == image
    assert parts[2].data == b"plain field"


def test_no_boundary_means_no_parts_and_parameters_unquote() -> None:
    assert parse_form_data("multipart/form-data", b"--x\r\n\r\nstray\r\n--x--") == []
    assert header_parameters('form-data; name="a"; filename=b.png') == {"name": "a", "filename": "b.png"}
    assert header_parameters(r'form-data; name="x"; filename="say \"hi\".txt"')["filename"] == 'say "hi".txt'
