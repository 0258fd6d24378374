"""Digest authentication: RFC test vectors, challenge parsing, the client's stale/failure rules."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.errors import UsageError
from phone_sim.sip.digest import (
    _FAST_AUTH_RE,
    AuthAttempt,
    AuthenticationFailed,
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    DigestError,
    DigestResponse,
    DigestServer,
    _parse_auth_list,
    _parse_auth_list_general,
    compute_response,
    parse_challenges,
)

# RFC 7616 §3.9.1
RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "method": "GET",
    "uri": "/dir/index.html",
    "qop": "auth",
    "nc": 1,
}



def _client(*creds: DigestCredentials, algorithms: tuple[str, ...] = ("MD5",)) -> DigestClient:
    counter = itertools.count(1)
    return DigestClient(
        list(creds) or [DigestCredentials("101", "1234")],
        algorithms=algorithms,
        cnonce_factory=lambda: f"cn{next(counter):04d}",
    )


def test_rfc2617_vector() -> None:
    got = compute_response(
        algorithm="MD5",
        username="Mufasa",
        realm="testrealm@host.com",
        password="Circle Of Life",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc=1,
        cnonce="0a4f113b",
    )
    assert got == "6629fae49393a05397450978507c4ef1"


def test_rfc7616_md5_vector() -> None:
    assert compute_response(algorithm="MD5", **RFC7616) == "8ca523f5e9506fed4657c9700eebdbec"  # type: ignore[arg-type]


def test_rfc7616_sha256_vector() -> None:
    got = compute_response(algorithm="SHA-256", **RFC7616)  # type: ignore[arg-type]
    assert got == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_rfc2069_without_qop() -> None:
    # RFC 2069: response = H(H(A1):nonce:H(A2))
    import hashlib

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    expected = md5(f"{md5('u:r:p')}:n:{md5('REGISTER:sip:r')}")
    got = compute_response(
        algorithm="MD5", username="u", realm="r", password="p", nonce="n",
        method="REGISTER", uri="sip:r",
    )
    assert got == expected


def test_sess_and_auth_int_differ_from_plain() -> None:
    base = dict(username="u", realm="r", password="p", nonce="n", method="INVITE",
                uri="sip:x", nc=1, cnonce="c")
    plain = compute_response(algorithm="MD5", qop="auth", **base)  # type: ignore[arg-type]
    sess = compute_response(algorithm="MD5-sess", qop="auth", **base)  # type: ignore[arg-type]
    aint = compute_response(algorithm="MD5", qop="auth-int", body=b"v=0\r\n", **base)  # type: ignore[arg-type]
    assert len({plain, sess, aint}) == 3


def test_parse_asterisk_challenge() -> None:
    value = ('Digest realm="asterisk",nonce="1732780000/abcdef",opaque="5e4d3c",'
             'algorithm=md5,qop="auth"')
    (challenge,) = DigestChallenge.parse(value)
    assert challenge.realm == "asterisk"
    assert challenge.nonce == "1732780000/abcdef"
    assert challenge.opaque == "5e4d3c"
    assert challenge.algorithm == "MD5"
    assert challenge.qop == ("auth",)
    assert not challenge.stale


def test_parse_quoted_escape_and_stale_and_qop_list() -> None:
    (challenge,) = DigestChallenge.parse(
        'Digest realm="a \\"quoted\\" realm", nonce="n", stale=TRUE, qop="auth,auth-int"'
    )
    assert challenge.realm == 'a "quoted" realm'
    assert challenge.stale
    assert challenge.qop == ("auth", "auth-int")


def test_several_challenges_in_one_field_and_other_schemes_skipped() -> None:
    got = DigestChallenge.parse(
        'Basic realm="x", Digest realm="a", nonce="1", algorithm=SHA-256, '
        'Digest realm="a", nonce="2"'
    )
    assert [(c.algorithm, c.nonce) for c in got] == [("SHA-256", "1"), ("MD5", "2")]


def test_parse_challenges_from_header_fields() -> None:
    got = parse_challenges([
        ("Via", "SIP/2.0/UDP x"),
        ("Proxy-Authenticate", 'Digest realm="p", nonce="1"'),
        ("WWW-Authenticate", 'Digest realm="u", nonce="2"'),
    ])
    assert [(c.proxy, c.realm) for c in got] == [(True, "p"), (False, "u")]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Digest nonce="1"', "without realm"),
        ('Digest realm="r"', "without nonce"),
        ('Digest realm="r, nonce=1', "unterminated"),
        ('Digest realm="r", realm="s", nonce="1"', "duplicate"),
        ('realm="r", nonce="1"', "without an authentication scheme"),
        ('Digest realm="r" nonce="1"', "expected ','"),
        ("Digest realm=", "expected a token"),
    ],
)
def test_malformed_challenges_are_named(value: str, message: str) -> None:
    with pytest.raises(DigestError, match=message) as info:
        DigestChallenge.parse(value)
    assert info.value.status == 400


@given(st.text(max_size=200) | st.text(alphabet='Digest ralmnoc="\\,=qp', max_size=80))
def test_challenge_parser_only_raises_digest_error(text: str) -> None:
    with contextlib.suppress(DigestError):
        for challenge in DigestChallenge.parse(text):
            assert challenge.realm is not None and challenge.nonce


def test_challenge_str_round_trips() -> None:
    original = DigestChallenge(realm='r"x', nonce="n", opaque="o", stale=True, qop=("auth",),
                               algorithm="SHA-256")
    (again,) = DigestChallenge.parse(str(original))
    assert again == original


def test_password_not_in_repr() -> None:
    creds = DigestCredentials("101", "s3cr3t-pass")
    assert "s3cr3t-pass" not in repr(creds)
    assert "s3cr3t-pass" not in repr(DigestClient(creds))


def test_client_answer_verifies_against_server_and_uses_pjsip_order() -> None:
    server = DigestServer("asterisk", secret=b"k" * 32)
    client = _client(DigestCredentials("101", "1234"))
    attempt = client.respond([server.challenge(10.0)], method="REGISTER", uri="sip:asterisk")
    ((name, value),) = attempt.headers
    assert name == "Authorization"
    assert value.startswith('Digest username="101", realm="asterisk", nonce="')
    assert ", algorithm=MD5, cnonce=\"cn0001\", qop=auth, nc=00000001" in value
    verdict = server.verify(value, method="REGISTER", passwords={"101": "1234"}, now=11.0)
    assert verdict.ok and verdict.username == "101"
    wrong = server.verify(value, method="REGISTER", passwords={"101": "nope"}, now=11.0)
    assert not wrong.ok and wrong.reason == "wrong response digest"


def test_server_says_stale_for_old_nonce_and_rejects_foreign_nonce() -> None:
    server = DigestServer("r", nonce_lifetime=30.0)
    client = _client()
    attempt = client.respond([server.challenge(0.0)], method="REGISTER", uri="sip:r")
    value = attempt.headers[0][1]
    verdict = server.verify(value, method="REGISTER", passwords={"101": "1234"}, now=31.0)
    assert verdict.stale and not verdict.ok
    other = DigestServer("r")
    assert other.verify(value, method="REGISTER", passwords={"101": "1234"}, now=1.0).reason == (
        "nonce not issued by this server"
    )


def test_second_challenge_without_stale_is_failure_not_loop() -> None:
    client = _client()
    first = client.respond([DigestChallenge(realm="r", nonce="1", qop=("auth",))],
                           method="REGISTER", uri="sip:r")
    with pytest.raises(AuthenticationFailed, match="rejected the credentials of '101'"):
        client.respond([DigestChallenge(realm="r", nonce="2", qop=("auth",))],
                       method="REGISTER", uri="sip:r", previous=first)


def test_stale_is_answered_once_more_then_failure() -> None:
    client = _client()
    first = client.respond([DigestChallenge(realm="r", nonce="1", qop=("auth",))],
                           method="REGISTER", uri="sip:r")
    second = client.respond([DigestChallenge(realm="r", nonce="2", qop=("auth",), stale=True)],
                            method="REGISTER", uri="sip:r", previous=first)
    assert second.stale_realms == {(False, "r")}
    assert 'nonce="2"' in second.headers[0][1]
    assert "nc=00000001" in second.headers[0][1]  # a new nonce restarts the count
    with pytest.raises(AuthenticationFailed, match="stale=true twice"):
        client.respond([DigestChallenge(realm="r", nonce="3", stale=True)],
                       method="REGISTER", uri="sip:r", previous=second)
    with pytest.raises(AuthenticationFailed, match="rejected"):
        client.respond([DigestChallenge(realm="r", nonce="3")],
                       method="REGISTER", uri="sip:r", previous=second)


def test_preemptive_answer_counts_nonce_and_a_challenge_to_it_is_not_failure() -> None:
    client = _client()
    assert client.authorize(method="REGISTER", uri="sip:r") is None
    client.respond([DigestChallenge(realm="r", nonce="1", qop=("auth",), opaque="op")],
                   method="REGISTER", uri="sip:r")
    pre = client.authorize(method="REGISTER", uri="sip:r")
    assert pre is not None and pre.preemptive
    assert "nc=00000002" in pre.headers[0][1]
    assert 'opaque="op"' in pre.headers[0][1]
    again = client.respond([DigestChallenge(realm="r", nonce="9", qop=("auth",))],
                           method="REGISTER", uri="sip:r", previous=pre)
    assert again.realms == {(False, "r")}


def test_sha256_only_when_profile_allows() -> None:
    offered = [
        DigestChallenge(realm="r", nonce="1", algorithm="SHA-256", qop=("auth",)),
        DigestChallenge(realm="r", nonce="2", algorithm="MD5", qop=("auth",)),
    ]
    md5_only = _client().respond(offered, method="INVITE", uri="sip:x")
    assert "algorithm=MD5" in md5_only.headers[0][1]
    modern = _client(algorithms=("MD5", "SHA-256")).respond(offered, method="INVITE", uri="sip:x")
    # RFC 8760 2.4: the topmost supported challenge wins, one answer per realm.
    assert len(modern.headers) == 1
    assert "algorithm=SHA-256" in modern.headers[0][1]


def test_nothing_answerable_is_a_clear_failure() -> None:
    only_sha = [DigestChallenge(realm="r", nonce="1", algorithm="SHA-512-256")]
    with pytest.raises(AuthenticationFailed, match="SHA-512-256"):
        _client().respond(only_sha, method="INVITE", uri="sip:x")
    unknown = DigestChallenge.parse('Digest realm="r", nonce="1", algorithm=AKAv1-MD5')
    with pytest.raises(AuthenticationFailed, match="AKAv1-MD5"):
        _client().respond(unknown, method="INVITE", uri="sip:x")
    with pytest.raises(AuthenticationFailed, match="no credentials for realm 'other'"):
        _client(DigestCredentials("101", "x", realm="mine")).respond(
            [DigestChallenge(realm="other", nonce="1")], method="INVITE", uri="sip:x")
    with pytest.raises(AuthenticationFailed, match="sent no Digest"):
        _client().respond([], method="INVITE", uri="sip:x")


def test_proxy_and_www_challenges_answered_together() -> None:
    client = _client(DigestCredentials("a", "1", realm="proxy"), DigestCredentials("b", "2"))
    attempt = client.respond(
        [DigestChallenge(realm="proxy", nonce="1", proxy=True),
         DigestChallenge(realm="uas", nonce="2")],
        method="INVITE", uri="sip:x",
    )
    names = [name for name, _ in attempt.headers]
    assert names == ["Proxy-Authorization", "Authorization"]
    assert 'username="a"' in attempt.headers[0][1]
    assert 'username="b"' in attempt.headers[1][1]
    # RFC 2069 style (no qop): no nc/cnonce
    assert "nc=" not in attempt.headers[0][1]


def test_userhash() -> None:
    server_side = DigestChallenge(realm="r", nonce="1", algorithm="SHA-256", userhash=True)
    attempt = _client(algorithms=("SHA-256",)).respond([server_side], method="INVITE", uri="u")
    answer = DigestResponse.parse(attempt.headers[0][1])
    assert answer.userhash and answer.username != "101" and len(answer.username) == 64


def test_response_parse_round_trip_and_errors() -> None:
    answer = DigestResponse(username="u", realm="r", nonce="n", uri="sip:x", response="ab" * 16,
                            algorithm="MD5", cnonce="c", qop="auth", nc=7, opaque="o")
    assert DigestResponse.parse(str(answer)) == answer
    with pytest.raises(DigestError, match="without response"):
        DigestResponse.parse('Digest username="u", realm="r", nonce="n", uri="x"')
    with pytest.raises(DigestError, match="need nc and cnonce"):
        DigestResponse.parse('Digest username="u", realm="r", nonce="n", uri="x", '
                             'response="a", qop=auth')
    with pytest.raises(DigestError, match="8 hex"):
        DigestResponse.parse('Digest username="u", realm="r", nonce="n", uri="x", '
                             'response="a", qop=auth, nc=1, cnonce="c"')
    with pytest.raises(DigestError, match="not 64 hex digits"):
        DigestResponse.parse('Digest username="u", realm="r", nonce="n", uri="x", '
                             f'response="{"a" * 32}", algorithm=SHA-256')


def test_attempt_is_frozen() -> None:
    attempt = AuthAttempt(headers=(), realms=frozenset())
    with pytest.raises(AttributeError):
        attempt.preemptive = True  # type: ignore[misc]


def test_md5_is_always_answered() -> None:
    client = _client(algorithms=("SHA-256",))
    assert client.algorithms == {"MD5", "SHA-256"}
    with pytest.raises(UsageError, match="unknown digest algorithm"):
        DigestClient(DigestCredentials("u", "p"), algorithms=("ROT13",))


# -- the fast path of the auth-param parser against the scanner ------------------------------

_PIECES = st.sampled_from(
    [
        "Digest", "digest", "Basic", "realm", "nonce", "username", "qop", "nc", "uri",
        "response", "algorithm", "MD5", "auth", "00000001", "=", ",", " ", "\t", "\r\n", '"',
        '\\"', "\\\\", '"x y"', '"a,b"', '"sip:101@pbx"', "''", "~*", "é", "<", ";", "",
    ]
)  # fmt: skip


def _outcome(parse: Callable[[str], object], text: str) -> object:
    try:
        return parse(text)
    except DigestError as exc:
        return ("error", str(exc), exc.status)


def _auth_value_like() -> st.SearchStrategy[str]:
    param = st.tuples(
        st.sampled_from(["realm", "nonce", "uri", "qop", "nc", "opaque", "Realm", "x-y"]),
        st.sampled_from(["=", " = ", "\t=", "=\r\n "]),
        st.one_of(
            st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,12}", fullmatch=True),
            st.text(alphabet='ab,= \\"\t', max_size=12).map(
                lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
            ),
        ),
    ).map("".join)
    sep = st.sampled_from([",", ", ", " ,", ",\t", ",,"])
    return st.tuples(
        st.sampled_from(["Digest ", "Digest\t", " Digest  ", "Basic ", "Digest"]),
        st.lists(st.tuples(param, sep), max_size=6),
        param,
        st.sampled_from(["", " ", ",", "\r\n", ' x', '"']),
    ).map(lambda t: t[0] + "".join(p + s for p, s in t[1]) + t[2] + t[3])


@given(
    st.lists(_PIECES, max_size=30).map("".join)
    | _auth_value_like()
    | st.text(alphabet='Digest rlmnoc="\\,=\t\r\n', max_size=60)
)
def test_fast_auth_param_parser_equals_the_scanner(text: str) -> None:
    """The one-regex fast path returns what the scanner returns, and fails the same way."""
    assert _outcome(_parse_auth_list, text) == _outcome(_parse_auth_list_general, text)


def test_fast_auth_param_parser_takes_the_common_shapes() -> None:
    """The fast path is taken (the scanner is not called) for a pjsip answer and a challenge."""
    answer = (
        'Digest username="101", realm="asterisk", nonce="1732780000/0a1b", uri="sip:pbx",'
        ' response="0123456789abcdef0123456789abcdef", algorithm=MD5, cnonce="abc",'
        ' qop=auth, nc=00000001'
    )
    challenge = 'Digest  realm="a\\"b",\tnonce="n" , algorithm=MD5,qop="auth,auth-int"'
    for text in (answer, challenge):
        assert _FAST_AUTH_RE.fullmatch(text) is not None
        assert _parse_auth_list(text) == _parse_auth_list_general(text)
    assert _parse_auth_list(challenge)[0][1]["realm"] == 'a"b'
    with pytest.raises(DigestError, match="duplicate digest parameter 'realm'"):
        _parse_auth_list('Digest realm="a", Realm="b"')


# --------------------------------------------------------------------------------------------
# The server side against hostile answers (issue #10: replay, crafted values)


def _answer(server: DigestServer, *, now: float = 1.0, uri: str = "sip:r", bind: str = "",
            client: DigestClient | None = None) -> tuple[DigestClient, str]:
    client = client or _client()
    attempt = client.respond([server.challenge(now, bind=bind)], method="REGISTER", uri=uri)
    return client, attempt.headers[0][1]


def _verify(server: DigestServer, value: str, *, now: float = 2.0, uri: str | None = "sip:r",
            bind: str = "") -> object:
    return server.verify(value, method="REGISTER", passwords={"101": "1234"}, now=now,
                         request_uri=uri, bind=bind)


@pytest.mark.parametrize(
    ("name", "crafted"),
    [
        ("response", "é" * 32),          # hmac.compare_digest raised TypeError on non-ASCII str
        ("response", "zz" * 16),          # not hex
        ("response", "ab"),               # too short for MD5
        ("uri", "sip:r\udcff"),          # a non-UTF-8 byte, as the parser's surrogateescape
        ("username", "10\udcff1"),
        ("cnonce", "\udc80"),
        ("realm", "r\udcff"),
    ],
)
def test_a_crafted_answer_is_malformed_never_raises(name: str, crafted: str) -> None:
    server = DigestServer("r", secret=b"k" * 32)
    _, value = _answer(server)
    parsed = DigestResponse.parse(value)
    params = {
        "username": parsed.username, "realm": parsed.realm, "nonce": parsed.nonce,
        "uri": parsed.uri, "response": parsed.response, "cnonce": parsed.cnonce,
    }
    params[name] = crafted
    fields = ", ".join(f'{k}="{v}"' for k, v in params.items())
    crafted_value = f"Digest {fields}, algorithm=MD5, qop=auth, nc=00000001"
    verdict = server.verify(crafted_value, method="REGISTER", passwords={"101": "1234"},
                            now=2.0, request_uri=None)
    assert not verdict.ok and not verdict.stale and verdict.malformed
    assert verdict.reason


def test_the_digest_uri_must_be_the_request_uri() -> None:
    server = DigestServer("r", secret=b"k" * 32)
    client, value = _answer(server, uri="sip:101@r")
    moved = _verify(server, value, uri="sip:102@r")
    assert not moved.ok and moved.malformed  # type: ignore[attr-defined]
    assert "does not match the Request-URI" in moved.reason  # type: ignore[attr-defined]
    # RFC 3261 19.1.4 equality, not string equality: the host is case-insensitive.
    _client2, value = _answer(server, uri="sip:101@R", client=client)
    assert _verify(server, value, uri="sip:101@r").ok  # type: ignore[attr-defined]


def test_a_replayed_nonce_count_is_refused_with_stale() -> None:
    server = DigestServer("r", secret=b"k" * 32)
    client, first = _answer(server)
    assert _verify(server, first).ok  # type: ignore[attr-defined]
    replay = _verify(server, first, now=3.0)
    assert not replay.ok and replay.stale  # type: ignore[attr-defined]
    assert "nonce count" in replay.reason  # type: ignore[attr-defined]
    # The phone's next answer with the same nonce (nc=2) is fine; going back is not.
    attempt = client.authorize(method="REGISTER", uri="sip:r")
    assert attempt is not None
    second = attempt.headers[0][1]
    assert "nc=00000002" in second
    assert _verify(server, second, now=4.0).ok  # type: ignore[attr-defined]
    lower = _verify(server, first, now=5.0)
    assert not lower.ok and lower.stale  # type: ignore[attr-defined]


def test_the_nonce_count_table_is_bounded_and_expires_with_the_nonces() -> None:
    server = DigestServer("r", secret=b"k" * 32, nonce_lifetime=10.0, max_nonces=3)
    values = []
    for n in range(5):
        _c, value = _answer(server, now=float(n))
        assert _verify(server, value, now=float(n)).ok  # type: ignore[attr-defined]
        values.append(value)
    assert server.tracked_nonces == 3
    # An evicted nonce can no longer be counted: its next use gets stale, never a replay.
    client = _client()
    client.respond([server.challenge(0.0)], method="REGISTER", uri="sip:r")
    attempt = client.authorize(method="REGISTER", uri="sip:r")
    assert attempt is not None
    verdict = _verify(server, attempt.headers[0][1], now=5.0)
    assert not verdict.ok and verdict.stale  # type: ignore[attr-defined]
    # Once their nonces have expired, the entries go.
    _c, fresh = _answer(server, now=30.0)
    assert _verify(server, fresh, now=30.0).ok  # type: ignore[attr-defined]
    assert server.tracked_nonces == 1


def test_a_bound_nonce_serves_only_its_request() -> None:
    server = DigestServer("r", secret=b"k" * 32)
    _c, value = _answer(server, bind="call-1\x00tag")
    other = _verify(server, value, bind="call-2\x00tag")
    assert not other.ok and other.stale  # type: ignore[attr-defined]
    assert _verify(server, value, bind="call-1\x00tag").ok  # type: ignore[attr-defined]


def test_an_expired_nonce_is_merely_stale() -> None:
    server = DigestServer("r", secret=b"k" * 32, nonce_lifetime=5.0)
    _c, value = _answer(server, now=0.0)
    verdict = _verify(server, value, now=6.0)
    assert verdict.stale and not verdict.malformed and verdict.reason == "nonce expired"  # type: ignore[attr-defined]


_PARAM_NAMES = ["username", "realm", "nonce", "uri", "response", "cnonce", "nc", "qop",
                "algorithm", "opaque"]


@given(st.dictionaries(st.sampled_from(_PARAM_NAMES),
                       st.text(max_size=40) | st.sampled_from(["\udcff", "é" * 32, "0" * 8]),
                       max_size=10))
def test_any_answer_gets_a_verdict_never_an_exception(params: dict[str, str]) -> None:
    server = DigestServer("r", secret=b"k" * 32)
    fields = ", ".join(f'{k}="{v}"' for k, v in params.items())
    for value in (f"Digest {fields}", f"Digest {fields.replace(chr(34), '')}"):
        verdict = server.verify(value, method="INVITE", passwords={"101": "1234"}, now=1.0,
                                request_uri="sip:r", bind="x")
        assert not verdict.ok
