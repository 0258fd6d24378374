"""How many SIP messages per second phone-sim parses and serializes.

Run: ``.venv/bin/python benchmarks/bench_sip_parse.py [--runs 7] [--seconds 0.3]``

For a typical REGISTER, a 200 OK to it and an INVITE with SDP, it prints the median over
several runs of: ``parse_message`` alone; parse plus the accessors a transaction layer reads
(top Via, CSeq, Call-ID, tags); ``bytes(msg)``; and the same messages through the
``StreamFramer`` (a stream of them fed in 1400-octet segments). The parser keeps a bounded
memo of the values that repeat (From, To, Contact, CSeq, the Request-URI), which the same
message parsed again always hits; the ``cold`` column parses a cycle of distinct variants
(every user, tag, branch, Call-ID and CSeq different, more of them than the memos hold), so
it never hits: the cost of a message from a phone never seen before. As baselines measured in the
same run it prints the standard library's RFC 822 header parser
(``email.parser.BytesHeaderParser``) on the same octets, and a bare split of the header
lines, with our parser's cost as a ratio to each.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import itertools
import statistics
import time
from collections.abc import Callable

from phone_sim.sip import StreamFramer, parse_message
from phone_sim.sip.message import _MEMO_SIZE

REGISTER = (
    b"REGISTER sip:pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5061;rport;branch=z9hG4bKPj8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "101" <sip:101@pbx.example.com>;tag=Pj0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b\r\n'
    b"To: <sip:101@pbx.example.com>\r\n"
    b"Call-ID: Pj4f1b2c3d4e5f60718293a4b5c6d7e8f9\r\n"
    b"CSeq: 28731 REGISTER\r\n"
    b"User-Agent: Digium D40 1_9_2_0_93009\r\n"
    b'Contact: "101" <sip:101@192.0.2.10:5061;transport=TLS;ob>\r\n'
    b"Expires: 300\r\n"
    b"Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER, MESSAGE,"
    b" OPTIONS\r\n"
    b'Authorization: Digest username="101", realm="asterisk", nonce="1732780000/0a1b2c3d4e5f",'
    b' uri="sip:pbx.example.com", response="0123456789abcdef0123456789abcdef",'
    b' algorithm=MD5, cnonce="abcdef0123456789", opaque="5e4d3c2b1a", qop=auth, nc=00000001\r\n'
    b"Content-Length: 0\r\n"
    b"\r\n"
)

OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5061;rport=40312;received=198.51.100.7;"
    b"branch=z9hG4bKPj8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a\r\n"
    b"Call-ID: Pj4f1b2c3d4e5f60718293a4b5c6d7e8f9\r\n"
    b'From: "101" <sip:101@pbx.example.com>;tag=Pj0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b\r\n'
    b"To: <sip:101@pbx.example.com>;tag=z9hG4bKPj8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a\r\n"
    b"CSeq: 28731 REGISTER\r\n"
    b"Date: Sat, 28 Nov 2026 06:00:00 GMT\r\n"
    b"Contact: <sip:101@198.51.100.7:40312;transport=TLS;ob>;expires=299\r\n"
    b"Expires: 300\r\n"
    b"Server: Asterisk PBX 22.1.0\r\n"
    b"Allow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE,"
    b" PRACK, MESSAGE, REFER\r\n"
    b"Supported: 100rel, timer, replaces, norefersub, path\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

SDP = (
    b"v=0\r\n"
    b"o=- 3912345678 3912345678 IN IP4 192.0.2.10\r\n"
    b"s=digphn\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 10000 RTP/SAVP 0 8 9 18 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:18 G729/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:102@pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5061;rport;branch=z9hG4bKPj1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "101" <sip:101@pbx.example.com>;tag=Pj9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c\r\n'
    b"To: <sip:102@pbx.example.com>\r\n"
    b'Contact: "101" <sip:101@192.0.2.10:5061;transport=TLS;ob>\r\n'
    b"Call-ID: Pj7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d\r\n"
    b"CSeq: 6155 INVITE\r\n"
    b"Route: <sip:192.0.2.1:5061;transport=tls;lr>\r\n"
    b"Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER, MESSAGE,"
    b" OPTIONS\r\n"
    b"Supported: replaces, 100rel, timer, norefersub\r\n"
    b"Session-Expires: 1800\r\n"
    b"Min-SE: 90\r\n"
    b"User-Agent: Digium D40 1_9_2_0_93009\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

MESSAGES = {"REGISTER": REGISTER, "200 OK": OK, "INVITE+SDP": INVITE}


def rate(func: Callable[[], object], seconds: float, runs: int) -> float:
    """Median calls per CPU second over ``runs`` runs of about ``seconds`` each.

    CPU time of this process, not wall time: the figures stay comparable on a shared machine.
    """
    n = 1
    while True:  # calibrate a batch that takes about 1/10 of a run
        t0 = time.process_time()
        for _ in range(n):
            func()
        if time.process_time() - t0 > seconds / 10:
            break
        n *= 2
    rates = []
    for _ in range(runs):
        count = 0
        t0 = time.process_time()
        while (elapsed := time.process_time() - t0) < seconds:
            for _ in range(n):
                func()
            count += n
        rates.append(count / elapsed)
    return statistics.median(rates)


_VARIED = (b"8d7c6b5a", b"0e1d2c3b", b"4f1b2c3d", b"9f8e7d6c", b"1a2b3c4d", b"7a6b5c4d")


def variants(data: bytes, count: int) -> list[bytes]:
    """``count`` distinct versions of ``data``: user, tags, branch, Call-ID and CSeq vary."""
    head, sep, body = data.partition(b"\r\n\r\n")
    out = []
    for i in range(count):
        h = head.replace(b"101", str(10000 + i).encode())
        h = h.replace(b"28731", str(1 + i).encode()).replace(b"6155", str(1 + i).encode())
        for old in _VARIED:
            h = h.replace(old, f"{i:08x}".encode())
        out.append(h + sep + body)
    assert len(set(out)) == count
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.3)
    args = ap.parse_args()
    header_parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)

    print(f"median of {args.runs} runs x {args.seconds}s, messages per second")
    head = f"{'message':<12}{'octets':>7}{'parse':>10}{'cold':>9}{'parse+acc':>11}{'serialize':>11}"
    head += f"{'framer':>10}{'email hdr':>11}{'split':>10}{'x email':>9}{'x split':>9}"
    print(head)
    for name, data in MESSAGES.items():
        msg = parse_message(data)
        assert bytes(msg) == data, name

        def accessors(data: bytes = data) -> None:
            m = parse_message(data)
            v = m.top_via
            _ = (v.branch, m.cseq.seq, m.call_id, m.from_.tag, m.to.tag)

        stream = data * 50
        segments = [stream[i : i + 1400] for i in range(0, len(stream), 1400)]

        def framed(segments: list[bytes] = segments) -> None:
            framer = StreamFramer()
            for seg in segments:
                framer.feed(seg)

        head_octets = data[: data.index(b"\r\n\r\n") + 4]

        def split_only(data: bytes = data) -> None:
            end = data.index(b"\r\n\r\n")
            for line in data[:end].decode("utf-8", "surrogateescape").split("\r\n")[1:]:
                line.partition(":")

        cycle = itertools.cycle(variants(data, 3 * _MEMO_SIZE))
        p = rate(lambda data=data: parse_message(data), args.seconds, args.runs)
        c = rate(lambda cycle=cycle: parse_message(next(cycle)), args.seconds, args.runs)
        a = rate(accessors, args.seconds, args.runs)
        s = rate(lambda msg=msg: bytes(msg), args.seconds, args.runs)
        f = rate(framed, args.seconds, args.runs) * 50
        e = rate(lambda h=head_octets: header_parser.parsebytes(h), args.seconds, args.runs)
        b = rate(split_only, args.seconds, args.runs)
        print(
            f"{name:<12}{len(data):>7}{p:>10.0f}{c:>9.0f}{a:>11.0f}{s:>11.0f}{f:>10.0f}{e:>11.0f}"
            f"{b:>10.0f}{p / e:>9.2f}{p / b:>9.3f}"
        )
    print("x email / x split: parse rate divided by the baseline's rate (higher is better)")
    print("cold: distinct messages the parse memos never saw (parse: the same message again)")


if __name__ == "__main__":
    main()
