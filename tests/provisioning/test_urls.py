"""The config_server_url forms."""

from __future__ import annotations

import pytest

from phone_sim.account import SipTransport
from phone_sim.provisioning.urls import (
    ConfigUrlError,
    ConfigUrlUnsupported,
    HttpConfigUrl,
    SipConfigUrl,
    parse_config_url,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:proxy@server.example.com:5061;transport=tls",
         SipConfigUrl(host="server.example.com", port=5061, transport=SipTransport.TLS)),
        ("sip:proxy@10.0.0.1", SipConfigUrl(host="10.0.0.1", port=None,
                                            transport=SipTransport.UDP)),
        ("SIP:proxy@[2001:db8::1]:5070;transport=TCP",
         SipConfigUrl(host="2001:db8::1", port=5070, transport=SipTransport.TCP)),
        ("sips:proxy@pbx", SipConfigUrl(host="pbx", port=None, transport=SipTransport.TLS)),
        ("https://pbx.example.com/digium_phones/",
         HttpConfigUrl(scheme="https", host="pbx.example.com", port=None,
                       path="/digium_phones")),
        ("pbx.example.com:8080", HttpConfigUrl(scheme="http", host="pbx.example.com",
                                               port=8080)),
        ("http://admin:pa%40ss@10.1.1.1/cfg",
         HttpConfigUrl(scheme="http", host="10.1.1.1", port=None, path="/cfg",
                       username="admin", password="pa@ss")),
    ],
)
def test_forms(text: str, expected: SipConfigUrl | HttpConfigUrl) -> None:
    assert parse_config_url(text) == expected


def test_labels_and_file_urls() -> None:
    sip = parse_config_url("sip:proxy@pbx;transport=tls")
    assert isinstance(sip, SipConfigUrl) and sip.label == "sip:proxy@pbx:5061;transport=tls"
    http = parse_config_url("https://u:secret@pbx:8443/a%20b")
    assert isinstance(http, HttpConfigUrl) and http.effective_port == 8443 and http.tls
    assert http.file_url("000fd3010203.cfg") == "https://pbx:8443/a%20b/000fd3010203.cfg"
    assert http.file_path("x y.cfg") == "/a%20b/x%20y.cfg"
    assert "secret" not in repr(http) and "secret" not in http.label


@pytest.mark.parametrize("text", ["https://u:secret@pbx:99999/", "ftp://u:secret@pbx/",
                                  "https://u:secret@bad_host!/"])
def test_errors_never_show_the_password(text: str) -> None:
    with pytest.raises(ConfigUrlError) as info:
        parse_config_url(text)
    assert "secret" not in str(info.value) and "u:***@" in str(info.value)


@pytest.mark.parametrize("scheme", ["ftp", "ftps"])
def test_ftp_is_not_supported_by_phone_sim(scheme: str) -> None:
    with pytest.raises(ConfigUrlUnsupported, match="not supported by phone-sim"):
        parse_config_url(f"{scheme}://pbx/cfg")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("sip:101@pbx", "literal 'proxy'"),
        ("sip:proxy@pbx:99999", "port"),
        ("sip:proxy@pbx;transport=sctp", "transport"),
        ("tftp://pbx/", "TFTP"),
        ("gopher://pbx/", "gopher"),
        ("http://pbx/a?b", "query"),
        ("http://[::1/", "unclosed"),
        ("http://bad_host!/", "server"),
        ("http://pbx x/", "spaces"),
    ],
)
def test_bad_urls(text: str, message: str) -> None:
    with pytest.raises(ConfigUrlError, match=message):
        parse_config_url(text)
