"""The emulator's HTTP server, spoken to by hand on a real socket."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from phone_sim.provisioning import aio_http
from tests.provisioning.conftest import MAC, conf_text, dpma_site


async def _ask(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(5):
        data = await reader.read()
    writer.close()
    return data


def _get(path: str, *extra: str) -> bytes:
    head = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "User-Agent: Digium D65 2_9_2", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def _basic(user: str, password: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_answers(tmp_path: Path) -> None:
    async with dpma_site(tmp_path, text=conf_text(general="config_auth=pin")) as site:
        http = site.dpma.http
        assert http is not None
        port = http.port
        ok = await _ask(port, _get(f"/digium_phones/{MAC}.cfg", _basic(MAC, "1111")))
        assert ok.startswith(b"HTTP/1.1 200 ") and b"<config>" in ok
        assert b"Content-Type: application/xml" in ok
        need_pin = await _ask(port, _get(f"/{MAC}.cfg"))
        assert need_pin.startswith(b"HTTP/1.1 401 ")
        assert b'WWW-Authenticate: Basic realm="phone-sim DPMA"' in need_pin
        wrong = await _ask(port, _get(f"/{MAC}.cfg", _basic(MAC, "9999")))
        unknown = await _ask(port, _get("/000fd3999999.cfg", _basic("000fd3999999", "1111")))
        assert wrong.startswith(b"HTTP/1.1 403 ")
        assert wrong.split(b"\r\n\r\n")[1] == unknown.split(b"\r\n\r\n")[1]
        assert (await _ask(port, _get(f"/{MAC}-contacts.xml", _basic(MAC, "1111")))
                ).startswith(b"HTTP/1.1 404 ")
        assert (await _ask(port, _get("/etc/passwd"))).startswith(b"HTTP/1.1 404 ")
        post = b"POST /x.cfg HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        answer = await _ask(port, post)
        assert answer.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD" in answer
        assert (await _ask(port, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        head = _get(f"/{MAC}.cfg", _basic(MAC, "1111")).replace(b"GET", b"HEAD", 1)
        assert (await _ask(port, head)).endswith(b"\r\n\r\n")  # no body for HEAD
        served = [s.phone for s in site.dpma.served]
        assert "alice" in served and None in served


async def test_a_silent_client_is_dropped(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aio_http, "REQUEST_TIMEOUT", 0.2)
    async with dpma_site(tmp_path) as site:
        http = site.dpma.http
        assert http is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the server
        writer.close()
