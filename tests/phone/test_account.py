"""The account model (the XML ``<account>`` loader is tested in tests/provisioning)."""

from __future__ import annotations

import pytest

from phone_sim.account import (
    Account,
    AccountError,
    SipHost,
    SipTransport,
    parse_server,
)


def test_domain_and_tls_name_defaults() -> None:
    host = SipHost(server="10.0.0.5", transport=SipTransport.TLS)
    account = Account(username="101", password="p", host_primary=host)
    assert account.domain_for(host) == "10.0.0.5" and account.tls_name_for(host) == "10.0.0.5"
    named = Account(username="101", password="p", host_primary=host, server_name="pbx.test")
    assert named.domain_for(host) == "pbx.test" and named.tls_name_for(host) == "pbx.test"
    both = Account(username="101", password="p", host_primary=host, server_name="pbx.test",
                   domain="example.com")
    assert both.domain_for(host) == "example.com" and both.tls_name_for(host) == "pbx.test"
    assert host.effective_port == 5061 and host.label == "10.0.0.5:5061/tls"


def test_password_is_never_in_repr() -> None:
    account = Account(username="101", password="s3cret", host_primary=SipHost(server="pbx"))
    assert "s3cret" not in repr(account)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pbx.test", ("pbx.test", None)),
        ("pbx.test:5070", ("pbx.test", 5070)),
        ("127.0.0.1:5061", ("127.0.0.1", 5061)),
        ("[::1]:5061", ("::1", 5061)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
    ],
)
def test_parse_server(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_server(text, SipTransport.TLS) == expected


@pytest.mark.parametrize("text", ["", "pbx:0", "pbx:99999", "pbx:abc", "[::1", "[::1]x", "a b",
                                  "pbx:²", "pbx:٥٠٦٠", "[::1]:¹"])
def test_parse_server_refuses(text: str) -> None:
    with pytest.raises(AccountError):
        parse_server(text, SipTransport.TLS)


def test_bad_fields_are_refused() -> None:
    host = SipHost(server="pbx")
    with pytest.raises(AccountError, match="user"):
        Account(username="10 1", password="p", host_primary=host)
    with pytest.raises(AccountError, match="control"):
        Account(username="101", password="p\r\n", host_primary=host)
    with pytest.raises(AccountError, match="index"):
        Account(username="101", password="p", host_primary=host, index=9)
    with pytest.raises(AccountError, match="num_retries"):
        SipHost(server="pbx", num_retries=-1)
    assert SipTransport.parse(" TLS ") is SipTransport.TLS


@pytest.mark.parametrize(("server", "words"), [
    ("x..y", "empty label"),
    ("a" * 64 + ".example.com", "longer than 63"),
    (".".join(["abcdefghi"] * 26), "at most 253"),
])
def test_host_names_the_resolver_would_refuse_are_refused_by_rule(server: str, words: str) -> None:
    # getaddrinfo raises UnicodeError (not OSError) for these: the phone layer got "Task
    # exception was never retrieved" and a timeout instead of a reason.
    with pytest.raises(AccountError, match=words):
        SipHost(server=server)
    with pytest.raises(AccountError, match=words):
        parse_server(f"{server}:5061", SipTransport.TLS)
    assert SipHost(server="a" * 63 + ".example.com").server.startswith("a")


async def test_a_name_the_resolver_refuses_is_a_clear_transport_error() -> None:
    # Reached only by a name that passed the rules above but not the resolver's IDNA step.
    import socket

    from phone_sim.tls.aio import describe_connect_error

    with pytest.raises(UnicodeError) as info:
        socket.getaddrinfo("a" * 64 + ".test", 5061)
    assert describe_connect_error("bad", 5061, info.value, 5.0).startswith(
        "cannot resolve 'bad': not a valid host name")
