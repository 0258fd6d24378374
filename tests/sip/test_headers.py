"""The Headers multi-dict and the structured header values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.sip import CSeq, Headers, HeaderValueError, NameAddr, SipParseError, SipUri, Via
from phone_sim.sip.headers import (
    canonical_name,
    parse_date,
    parse_delta_seconds,
    parse_params,
    split_commas,
)


def test_canonical_names() -> None:
    assert canonical_name("v") == "Via"
    assert canonical_name("VIA") == "Via"
    assert canonical_name("call-id") == "Call-ID"
    assert canonical_name("i") == "Call-ID"
    assert canonical_name("cseq") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("X-Custom-Thing") == "X-Custom-Thing"
    for compact, full in [("m", "Contact"), ("l", "Content-Length"), ("c", "Content-Type"),
                          ("k", "Supported"), ("s", "Subject"), ("e", "Content-Encoding"),
                          ("o", "Event"), ("r", "Refer-To"), ("u", "Allow-Events"),
                          ("f", "From"), ("t", "To")]:  # fmt: skip
        assert canonical_name(compact) == full
        assert canonical_name(compact.upper()) == full


def test_multidict_operations() -> None:
    h = Headers([("v", "SIP/2.0/UDP a"), ("From", "<sip:x@y>"), ("Via", "SIP/2.0/UDP b")])
    assert h.get_all("VIA") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    assert h.get("via") == "SIP/2.0/UDP a"
    assert h.get("To") is None and h.get("To", "d") == "d"
    assert "from" in h and "To" not in h and 3 not in h
    assert h.count("Via") == 2
    assert len(h) == 3
    assert [n for n, _ in h] == ["Via", "From", "Via"]
    h.add("Supported", "path, outbound")
    assert h.get_all("k") == ["path", "outbound"]
    assert h.lines("Supported") == ["path, outbound"]
    h.set("Via", "SIP/2.0/TLS c")
    assert h.items() == [
        ("Via", "SIP/2.0/TLS c"),
        ("From", "<sip:x@y>"),
        ("Supported", "path, outbound"),
    ]
    h.set("Expires", 30)
    assert h.items()[-1] == ("Expires", "30")
    assert h.remove("supported") == 1 and "Supported" not in h
    assert h.remove("Nothing") == 0
    h.insert(0, "Route", "<sip:p;lr>")
    assert h.items()[0] == ("Route", "<sip:p;lr>")
    h.set_all("Via", ["SIP/2.0/UDP 1", "SIP/2.0/UDP 2"])
    assert h.items()[1:3] == [("Via", "SIP/2.0/UDP 1"), ("Via", "SIP/2.0/UDP 2")]
    copy = h.copy()
    assert copy == h
    copy.add("X", "1")
    assert copy != h
    assert h != "not headers"


def test_pop_first_takes_one_list_element() -> None:
    h = Headers([("Route", "<sip:a;lr>, <sip:b;lr>"), ("Route", "<sip:c;lr>")])
    assert h.pop_first("Route") == "<sip:a;lr>"
    assert h.get_all("Route") == ["<sip:b;lr>", "<sip:c;lr>"]
    assert h.pop_first("Route") == "<sip:b;lr>"
    assert h.pop_first("Route") == "<sip:c;lr>"
    assert h.pop_first("Route") is None


def test_refuses_header_injection() -> None:
    h = Headers()
    with pytest.raises(HeaderValueError):
        h.add("Subject", "hi\r\nVia: evil")
    with pytest.raises(HeaderValueError):
        h.set("Bad Name", "x")
    with pytest.raises(HeaderValueError):
        h.insert(0, "X:", "x")


def test_repr_shows_names_only() -> None:
    h = Headers([("Authorization", 'Digest response="secret"')])
    assert "secret" not in repr(h)
    assert "Authorization" in repr(h)


def test_non_list_headers_are_not_split() -> None:
    h = Headers([("WWW-Authenticate", 'Digest realm="a", nonce="b"'), ("Date", "Sat, 15 Oct 2005")])
    assert h.get_all("WWW-Authenticate") == ['Digest realm="a", nonce="b"']
    assert h.get("Date") == "Sat, 15 Oct 2005"


def test_split_commas() -> None:
    assert split_commas("a, b,c") == ["a", "b", "c"]
    assert split_commas('"Doe, John" <sip:j@x>, <sip:k@y;a=1,2>') == [
        '"Doe, John" <sip:j@x>',
        "<sip:k@y;a=1,2>",
    ]
    assert split_commas('"esc \\" , still" <sip:a@b>, x') == ['"esc \\" , still" <sip:a@b>', "x"]
    assert split_commas(" , ,a,, ") == ["a"]
    assert split_commas("") == []


def test_parse_params() -> None:
    assert parse_params(' ; a = 1 ;b;c="q;," ', "t") == (("a", "1"), ("b", None), ("c", '"q;,"'))
    assert parse_params(";received=[2001:db8::1]", "t") == (("received", "[2001:db8::1]"),)
    for bad in (";", "; =1", ";a=", "x", ";a=1 junk", ';a="open'):
        with pytest.raises(SipParseError):
            parse_params(bad, "t")


def test_name_addr() -> None:
    na = NameAddr.parse('"Alice \\"A\\"" <sip:alice@example.com>;tag=abc;x')
    assert na.display_name == 'Alice "A"'
    assert na.uri == SipUri(user="alice", host="example.com")
    assert na.tag == "abc" and na.has_param("x") and na.param("y") is None
    assert str(na) == '"Alice \\"A\\"" <sip:alice@example.com>;tag=abc;x'
    assert NameAddr.parse(str(na)) == na
    plain = NameAddr.parse("sip:bob@example.com;tag=1")
    assert plain.uri.params == () and plain.tag == "1"
    assert str(plain) == "<sip:bob@example.com>;tag=1"
    tokens = NameAddr.parse("Bob Smith <sip:bob@x;lr>;expires=60")
    assert tokens.display_name == "Bob Smith"
    assert tokens.uri.has_param("lr")
    assert tokens.expires == 60
    assert NameAddr.parse("<sip:b@x>").display_name is None
    assert str(plain.with_tag("2")) == "<sip:bob@example.com>;tag=2"
    assert NameAddr.parse("<sip:b@x>;expires=99999999999").expires is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ('"unterminated <sip:a@b>', "unterminated"),
        ('"name" sip:a@b', "not followed"),
        ("Bell, Alexander <sip:a@b>", "display name"),
        ("<sip:a@b", "missing '>'"),
        ("sip:a@b?x=y", "angle brackets"),
        ("<sip:a@b>;;", "empty parameter"),
        ("<sip:a@b> junk", "expected"),
        ("<nonsense>", "scheme"),
    ],
)
def test_bad_name_addr(text: str, match: str) -> None:
    with pytest.raises(SipParseError, match=match):
        NameAddr.parse(text)


def test_via() -> None:
    via = Via.parse("SIP/2.0/TLS 192.0.2.10:5061;rport;branch=z9hG4bKPjabc;received=192.0.2.99")
    assert (via.protocol, via.version, via.transport) == ("SIP", "2.0", "TLS")
    assert (via.host, via.port, via.sent_by) == ("192.0.2.10", 5061, "192.0.2.10:5061")
    assert via.branch == "z9hG4bKPjabc"
    assert via.rport is True
    assert via.received == "192.0.2.99"
    assert str(via) == "SIP/2.0/TLS 192.0.2.10:5061;rport;branch=z9hG4bKPjabc;received=192.0.2.99"
    filled = via.with_param("rport", "40000")
    assert filled.rport == 40000
    assert str(filled).startswith("SIP/2.0/TLS 192.0.2.10:5061;rport=40000;branch=")
    assert Via.parse("SIP/2.0/UDP host").rport is None
    assert Via.parse("SIP/2.0/udp [::1]:5060").transport == "UDP"
    assert Via.parse("SIP/2.0/udp [::1]:5060").host == "[::1]"
    spaced = Via.parse("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9")
    assert spaced.branch == "z9hG4bK9" and spaced.host == "spindle.example.com"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 host",
        "SIP/2.0/UDP host:x",
        "SIP/2.0/UDP host;;",
        "S(P/2.0/UDP h",
    ],
)
def test_bad_via(text: str) -> None:
    with pytest.raises(SipParseError):
        Via.parse(text)


def test_cseq() -> None:
    assert CSeq.parse("0009  INVITE") == CSeq(9, "INVITE")
    assert str(CSeq(1, "REGISTER")) == "1 REGISTER"
    assert CSeq.parse(f"{2**31 - 1} BYE").seq == 2**31 - 1
    for bad in ("1", "INVITE", "x INVITE", "1 INV(TE", f"{2**31} BYE", "1 2 3", "-1 BYE"):
        with pytest.raises(SipParseError):
            CSeq.parse(bad)


def test_date_and_delta_seconds() -> None:
    assert parse_date("Sat, 15 Oct 2005 04:44:56 GMT")
    for bad in ("Fri, 01 Jan 2010 16:00:00 EST", "Sat, 15 Oct 2005 25:00:00 GMT", "yesterday",
                "Sat, ١٥ Oct 2005 04:44:56 GMT"):  # ASCII digits only (issue #10)
        with pytest.raises(SipParseError, match="Date"):
            parse_date(bad)
    assert parse_delta_seconds("3600") == 3600
    assert parse_delta_seconds(str(2**32 - 1)) == 2**32 - 1
    for bad in (str(2**32), "1" * 5000, "", "1.5"):
        with pytest.raises(SipParseError):
            parse_delta_seconds(bad)


def test_parsed_cache_is_invalidated() -> None:
    h = Headers([("CSeq", "1 INVITE")])
    assert h.parsed("CSeq", CSeq.parse) == [CSeq(1, "INVITE")]
    assert h.parsed("CSeq", CSeq.parse)[0] is h.parsed("cseq", CSeq.parse)[0]
    h.set("CSeq", CSeq(2, "INVITE"))
    assert h.parsed("CSeq", CSeq.parse) == [CSeq(2, "INVITE")]


# -- model-based: Headers against a plain list of (canonical name, value) lines -----------------


NAMES = ["Via", "v", "VIA", "Contact", "m", "Subject", "s", "X-Thing", "x-thing", "CSeq", "cseq"]
VALUES = st.sampled_from(["a", "b, c", "SIP/2.0/UDP h", '"x, y" <sip:a@b>', "", "1 INVITE"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(NAMES), VALUES),
        st.tuples(st.just("set"), st.sampled_from(NAMES), VALUES),
        st.tuples(st.just("remove"), st.sampled_from(NAMES), st.just("")),
        st.tuples(st.just("insert"), st.sampled_from(NAMES), VALUES),
        st.tuples(st.just("pop_first"), st.sampled_from(NAMES), st.just("")),
    ),
    max_size=25,
)


@given(OPS)
def test_headers_behave_like_a_list_of_lines(ops: list[tuple[str, str, str]]) -> None:
    h = Headers()
    model: list[tuple[str, str]] = []
    for op, name, value in ops:
        canon = canonical_name(name)
        same = [i for i, (n, _) in enumerate(model) if n.lower() == canon.lower()]
        if op == "add":
            h.add(name, value)
            model.append((canon, value))
        elif op == "set":
            h.set(name, value)
            if same:
                model[same[0]] = (canon, value)
                model = [e for i, e in enumerate(model) if i not in same[1:]]
            else:
                model.append((canon, value))
        elif op == "remove":
            assert h.remove(name) == len(same)
            model = [e for e in model if e[0].lower() != canon.lower()]
        elif op == "insert":
            h.insert(0, name, value)
            model.insert(0, (canon, value))
        else:
            popped = h.pop_first(name)
            if not same:
                assert popped is None
            else:
                i = same[0]
                elements = (
                    split_commas(model[i][1]) if canon in ("Via", "Contact") else [model[i][1]]
                )
                assert popped == (elements[0] if elements else model[i][1])
                if len(elements) > 1:
                    model[i] = (model[i][0], ", ".join(elements[1:]))
                else:
                    del model[i]
        assert h.items() == model
        for probe in NAMES:
            lines = [v for n, v in model if n.lower() == canonical_name(probe).lower()]
            assert h.lines(probe) == lines
            assert h.count(probe) == len(lines)
            assert (probe in h) == bool(lines)


def test_replace_first_keeps_position_and_other_elements() -> None:
    h = Headers([("From", "<sip:a@b>"), ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b"),
                 ("Via", "SIP/2.0/UDP c")])  # fmt: skip
    top = (
        Via.parse(h.get("Via") or "")
        .with_param("received", "192.0.2.7")
        .with_param("rport", "5062")
    )
    h.replace_first("Via", top)
    assert h.items() == [
        ("From", "<sip:a@b>"),
        ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1;received=192.0.2.7;rport=5062, SIP/2.0/UDP b"),
        ("Via", "SIP/2.0/UDP c"),
    ]
    h.replace_first("Subject", "hi")
    assert h.get("Subject") == "hi"
    h.replace_first("Subject", "a, b")
    assert h.lines("Subject") == ["a, b"]


def test_filling_in_rport_keeps_its_place() -> None:
    # RFC 3581 4: the server fills in the rport value the client left empty.
    via = Via.parse("SIP/2.0/UDP 10.0.0.2:5060;rport;branch=z9hG4bKx")
    filled = via.with_param("received", "192.0.2.7").with_param("rport", "40000")
    assert str(filled) == "SIP/2.0/UDP 10.0.0.2:5060;rport=40000;branch=z9hG4bKx;received=192.0.2.7"


# -- the kept index and parsed values against a fresh multi-dict -------------------------------

_NAMES = ["Via", "v", "Route", "Contact", "m", "CSeq", "X-Thing", "x-thing", "Allow"]
_VALUES = [
    "SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/TCP b, SIP/2.0/UDP c", "<sip:r@h;lr>",
    "<sip:a@b>, <sip:c@d>", "1 INVITE", "x, y", "*", "",
]  # fmt: skip
_OPERATION = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(_NAMES), st.sampled_from(_VALUES)),
    st.tuples(st.just("set"), st.sampled_from(_NAMES), st.sampled_from(_VALUES)),
    st.tuples(st.just("insert"), st.sampled_from(_NAMES), st.sampled_from(_VALUES)),
    st.tuples(st.just("remove"), st.sampled_from(_NAMES), st.just("")),
    st.tuples(st.just("pop_first"), st.sampled_from(_NAMES), st.just("")),
    st.tuples(st.just("replace_first"), st.sampled_from(_NAMES), st.sampled_from(_VALUES)),
    st.tuples(st.just("read"), st.sampled_from(_NAMES), st.just("")),
)


def _text_of(value: str) -> str:
    return value


@given(st.lists(_OPERATION, max_size=25))
def test_kept_index_and_parsed_values_match_a_fresh_multidict(
    operations: list[tuple[str, str, str]],
) -> None:
    """Mutations keep (add) or drop (the others) the index, and drop only the parsed values
    of the header they touch: every lookup gives what a fresh Headers of the same lines
    gives."""
    h = Headers()
    for op, name, value in operations:
        if op == "add":
            h.add(name, value)
        elif op == "set":
            h.set(name, value)
        elif op == "insert":
            h.insert(0, name, value)
        elif op == "remove":
            h.remove(name)
        elif op == "pop_first":
            h.pop_first(name)
        elif op == "replace_first":
            h.replace_first(name, value)
        for looked in _NAMES:
            fresh = Headers(h.items())
            assert h.get_all(looked) == fresh.get_all(looked)
            assert h.lines(looked) == fresh.lines(looked)
            assert h.count(looked) == fresh.count(looked)
            assert h.parsed(looked, _text_of) == fresh.get_all(looked)
