"""The account model and the phone XML ``<account>`` loader."""

from __future__ import annotations

import pytest

from phone_sim.account import (
    Account,
    AccountError,
    SipHost,
    SipTransport,
    account_from_xml,
    parse_server,
)
from phone_sim.errors import UsageError

CONFIG = b"""<config>
  <setting id="config_server_url" value="sip:proxy@asterisk.example.com:5061;transport=tls"/>
  <accounts>
    <account index="0" status="1" register="1" account_id="101" username="101" authname="a101"
             password="1234" passcode="1234" line_label="Bobby J" caller_id="Bobby J">
      <host_primary server="asterisk.example.com" port="5061" transport="tls"
                    reregister="120" retry="10" num_retries="2" media_encryption="sdes"/>
      <host_alternate server="192.0.2.20" transport="udp"/>
    </account>
    <account index="1" register="0" username="102" password="x">
      <host_primary server="pbx2.example.com"/>
    </account>
  </accounts>
</config>"""


def test_loads_the_vendor_example() -> None:
    account = account_from_xml(CONFIG)
    assert account.username == "101" and account.auth_username == "a101"
    assert account.password == "1234"
    assert account.line_label == "Bobby J"
    primary = account.host_primary
    assert primary == SipHost(server="asterisk.example.com", port=5061,
                              transport=SipTransport.TLS, reregister=120, retry=10.0,
                              num_retries=2, media_encryption="sdes")
    alternate = account.host_alternate
    assert alternate is not None
    assert alternate.transport is SipTransport.UDP and alternate.effective_port == 5060
    assert alternate.reregister == 300 and alternate.retry == 30.0
    assert account.hosts == (primary, alternate)


def test_picks_an_account_by_index() -> None:
    account = account_from_xml(CONFIG, index=1)
    assert account.username == "102"
    assert account.host_primary.effective_port == 5060
    with pytest.raises(AccountError, match="index=\"4\""):
        account_from_xml(CONFIG, index=4)


def test_a_bare_account_element_loads() -> None:
    xml = '<account account_id="201" password="p"><host_primary server="pbx"/></account>'
    assert account_from_xml(xml).username == "201"


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<config>", "well-formed"),
        ("<config/>", "no <account>"),
        ('<account password="p"><host_primary server="x"/></account>', "username"),
        ('<account username="1"/>', "host_primary"),
        ('<account username="1"><host_primary/></account>', "server"),
        ('<account username="1"><host_primary server="x" transport="sctp"/></account>',
         "transport"),
        ('<account username="1"><host_primary server="x" port="http"/></account>', "integer"),
        ('<account username="1"><host_primary server="x" port="٥٠٦٠"/></account>', "integer"),
        ('<account username="1"><host_primary server="x" retry=" 3_0"/></account>', "integer"),
        ('<account username="1"><host_primary server="x" port="70000"/></account>', "port"),
        ('<account username="1"><host_primary server="x" retry="0"/></account>', "retry"),
        ('<account username="1"><host_primary server="x" media_encryption="zrtp"/></account>',
         "media_encryption"),
        ('<account username="1"><host_primary server="bad host"/></account>', "server"),
    ],
)
def test_bad_configuration_names_the_problem(xml: str, message: str) -> None:
    with pytest.raises(AccountError, match=message) as info:
        account_from_xml(xml)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


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
    account = account_from_xml(CONFIG)
    assert "1234" not in repr(account)


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
