"""What a failing test reports of its phones' SIP exchange (phone_sim.testing.siplog)."""

from __future__ import annotations

import logging

from phone_sim.sip.wirelog import WIRE_LOGGER, log_wire, wire_enabled
from phone_sim.testing.siplog import SipCapture

INVITE = (b"INVITE sip:600@pbx SIP/2.0\r\nAuthorization: Digest response=\"abcdef0123\"\r\n\r\n"
          b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:SECRETKEYSECRETKEYSECRETKEYSECRETKEY12\r\n")


def test_the_capture_keeps_redacted_messages_in_order() -> None:
    with SipCapture() as capture:
        assert wire_enabled()
        log_wire("sent", "sip:101@127.0.0.1:5070", ("127.0.0.1", 5061), INVITE)
        log_wire("received", "sip:101@127.0.0.1:5070", ("127.0.0.1", 5061),
                 b"SIP/2.0 200 OK\r\n\r\n")
    assert not wire_enabled()
    report = capture.report()
    assert "SECRETKEY" not in report and "abcdef0123" not in report
    assert report.index("sip:101@127.0.0.1:5070 -> 127.0.0.1:5061") < report.index(
        "sip:101@127.0.0.1:5070 <- 127.0.0.1:5061")
    assert "INVITE sip:600@pbx SIP/2.0" in report and "SIP/2.0 200 OK" in report


def test_only_the_last_messages_are_kept_and_the_rest_is_counted() -> None:
    with SipCapture(limit=3) as capture:
        for n in range(5):
            log_wire("sent", "sip:101@h", ("127.0.0.1", 5060), f"MESSAGE {n}".encode())
    report = capture.report()
    assert "2 earlier messages left out" in report
    assert "MESSAGE 0" not in report and "MESSAGE 4" in report


def test_detaching_restores_the_logger_and_other_records_do_not_count() -> None:
    WIRE_LOGGER.setLevel(logging.WARNING)
    try:
        outer = SipCapture()
        inner = SipCapture()
        outer.attach()
        inner.attach()
        WIRE_LOGGER.debug("not a wire record")
        inner.detach()
        assert wire_enabled() and not WIRE_LOGGER.propagate  # outer still listens
        outer.detach()
        assert WIRE_LOGGER.level == logging.WARNING and WIRE_LOGGER.propagate
        assert outer.total == 0
    finally:
        WIRE_LOGGER.setLevel(logging.NOTSET)


def test_an_empty_capture_says_so() -> None:
    assert "no SIP message" in SipCapture().report()
