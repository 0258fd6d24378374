"""The TLS/TCP stream framer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest

from phone_sim.sip import (
    FramingError,
    KeepAlivePingReceived,
    KeepAlivePongReceived,
    MessageRejected,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    parse_message,
)
from phone_sim.testing.aio_ports import free_port
from phone_sim.testing.aio_pytest_peers import require

OPTIONS = (
    b"OPTIONS sip:101@192.0.2.10:5061;transport=tls SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.1:5061;rport;branch=z9hG4bK-1\r\n"
    b"From: <sip:asterisk@192.0.2.1>;tag=as1\r\n"
    b"To: <sip:101@192.0.2.10>\r\n"
    b"Call-ID: opt-1\r\n"
    b"CSeq: 102 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5061;rport=5061;branch=z9hG4bKPj1;received=192.0.2.10\r\n"
    b"From: <sip:101@pbx>;tag=p1\r\n"
    b"To: <sip:101@pbx>;tag=as2\r\n"
    b"Call-ID: reg-1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 5\r\n\r\n"
    b"hello"
)


def feed_all(framer: StreamFramer, data: bytes, step: int) -> list[object]:
    events: list[object] = []
    for i in range(0, len(data), step):
        events.extend(framer.feed(data[i : i + step]))
    return events


def test_whole_messages() -> None:
    framer = StreamFramer()
    events = framer.feed(OPTIONS + OK)
    assert events == [parse_message(OPTIONS), parse_message(OK)]
    assert isinstance(events[0], SipRequest) and isinstance(events[1], SipResponse)
    assert events[1].body == b"hello"
    assert framer.buffered == 0 and not framer.closed


@pytest.mark.parametrize("step", [1, 2, 3, 5, 17, 100])
def test_split_at_any_size(step: int) -> None:
    stream = OPTIONS + b"\r\n\r\n" + OK + b"\r\n" + OPTIONS
    events = feed_all(StreamFramer(), stream, step)
    messages = [
        e for e in events if not isinstance(e, KeepAlivePingReceived | KeepAlivePongReceived)
    ]
    assert messages == [parse_message(OPTIONS), parse_message(OK), parse_message(OPTIONS)]


def test_every_split_point_gives_the_same_messages() -> None:
    stream = OPTIONS + OK
    expected = [parse_message(OPTIONS), parse_message(OK)]
    for cut in range(len(stream) + 1):
        framer = StreamFramer()
        assert framer.feed(stream[:cut]) + framer.feed(stream[cut:]) == expected
        assert framer.buffered == 0


def test_keepalive_ping_and_pong() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [KeepAlivePingReceived()]
    assert framer.feed(b"\r\n") == [KeepAlivePongReceived()]
    assert framer.feed(b"\r\n" + OPTIONS) == [KeepAlivePongReceived(), parse_message(OPTIONS)]
    assert framer.feed(b"\r\n\r\n\r\n") == [KeepAlivePingReceived(), KeepAlivePongReceived()]
    # A ping split in the middle waits for the rest.
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n\r") == []
    assert framer.feed(b"\n") == [KeepAlivePingReceived()]
    assert framer.buffered == 0


def test_missing_content_length_is_fatal() -> None:
    framer = StreamFramer()
    data = OPTIONS.replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(SipParseError, match="without Content-Length"):
        framer.feed(data)
    assert framer.closed
    with pytest.raises(SipParseError, match="closed"):
        framer.feed(OPTIONS)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (OPTIONS.replace(b"Content-Length: 0", b"Content-Length: x"), "Content-Length"),
        (OPTIONS.replace(b"Max-Forwards: 70", b"Content-Length: 4"), "conflicting"),
        (OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 9999999"), "exceeds"),
        (b"\rX", "stray CR"),
        (b"\r\n\rX", "stray CR"),
    ],
)
def test_framing_errors_are_fatal(data: bytes, match: str) -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError, match=match):
        framer.feed(data)
    assert framer.closed


def test_header_section_limit() -> None:
    framer = StreamFramer(max_header_bytes=200)
    with pytest.raises(SipParseError, match="no end of header section") as info:
        for _ in range(100):
            framer.feed(b"X-Pad: " + b"a" * 20 + b"\r\n")
    assert info.value.status == 513
    with pytest.raises(SipParseError, match="exceeds") as info:
        StreamFramer(max_header_bytes=100).feed(OPTIONS)
    assert info.value.status == 513


def test_body_limit() -> None:
    with pytest.raises(SipParseError, match="exceeds") as info:
        StreamFramer(max_body_bytes=4).feed(OK)
    assert info.value.status == 413


def test_malformed_but_delimited_message_does_not_kill_the_stream() -> None:
    bad = OPTIONS.replace(b"CSeq: 102 OPTIONS", b"CSeq: 102 INVITE")
    framer = StreamFramer()
    events = framer.feed(bad + OK)
    assert isinstance(events[0], MessageRejected)
    assert events[0].error.status == 400
    assert isinstance(events[0].error.partial, SipRequest)
    assert events[1] == parse_message(OK)
    assert not framer.closed


def test_bad_header_line_with_known_length_is_rejected_not_fatal() -> None:
    bad = OPTIONS.replace(b"Max-Forwards: 70", b"Max Forwards 70")
    framer = StreamFramer()
    events = framer.feed(bad + OPTIONS)
    assert isinstance(events[0], MessageRejected)
    assert "colon" in str(events[0].error)
    assert events[1] == parse_message(OPTIONS)


def test_rejected_response_has_no_status() -> None:
    bad = OK.replace(b"CSeq: 1 REGISTER", b"CSeq: one REGISTER")
    (event,) = StreamFramer().feed(bad)
    assert isinstance(event, MessageRejected)
    assert event.error.status is None


def test_large_body_arriving_slowly() -> None:
    body = b"x" * 100_000
    msg = OK.replace(b"Content-Length: 5", b"Content-Length: %d" % len(body)).replace(
        b"hello", body
    )
    framer = StreamFramer()
    events = feed_all(framer, msg, 1000)
    assert len(events) == 1
    assert isinstance(events[0], SipResponse) and events[0].body == body


def test_framing_error_keeps_the_events_completed_before_it() -> None:
    framer = StreamFramer()
    garbage = OPTIONS.replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(FramingError) as info:
        framer.feed(OPTIONS + b"\r\n\r\n" + OK + garbage)
    assert info.value.events == [parse_message(OPTIONS), KeepAlivePingReceived(), parse_message(OK)]
    assert isinstance(info.value, SipParseError)
    assert "Content-Length" in str(info.value)
    assert framer.closed
    with pytest.raises(FramingError) as later:
        framer.feed(OPTIONS)
    assert later.value.events == []


# -- a real peer: SIPp's built-in UAC over TCP on loopback ---------------------------------------


@pytest.mark.peer
def test_sipp_tcp_stream_through_the_framer() -> None:
    sipp = require("sipp")
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(1)
        server.settimeout(5)
        proc = subprocess.Popen(
            [sipp, f"127.0.0.1:{port}", "-sn", "uac", "-t", "t1", "-m", "1",
             "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()),
             "-timeout", "8s", "-nostdin", "-s", "102"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                framer = StreamFramer()

                def next_request() -> SipRequest:
                    while True:
                        for event in framer.feed(conn.recv(4096)):
                            if isinstance(event, SipRequest):
                                return event

                invite = next_request()
                assert invite.method == "INVITE" and invite.top_via.transport == "TCP"
                assert len(invite.body) == int(invite.headers.get("Content-Length") or -1)
                conn.sendall(bytes(invite.create_response(486, to_tag="phone-sim-2")))
                ack = next_request()
                assert ack.method == "ACK" and ack.to.tag == "phone-sim-2"
                assert ack.top_via.branch == invite.top_via.branch
                assert not framer.closed
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
