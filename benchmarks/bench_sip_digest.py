"""What digest authentication costs per REGISTER, on the phone's side and the registrar's.

Run: ``.venv/bin/python benchmarks/bench_sip_digest.py [--runs 7] [--seconds 0.3]``

It prints the median over several runs (CPU time of this process, so the figures stay
comparable on a shared machine) of operations per second for:

- ``DigestChallenge.parse`` of an Asterisk-style challenge (the phone reading a 401);
- ``DigestClient.respond``: choose the challenge, compute and render the answer;
- ``DigestResponse.parse`` of a pjsip ``Authorization`` value (the registrar reading it);
- ``DigestServer.verify``: parse, check the nonce's HMAC, recompute the digest;
- ``compute_response`` alone: the three MD5 hashes, the floor no parser can go under.

Baselines measured in the same run: the general auth-param scanner on the same
``Authorization`` value (the path every value took before the one-regex fast path; ``x
scanner`` is how many times faster the fast path is) and ``compute_response``
(``x hashes``: verify's cost as a multiple of the bare hashing). Nothing is asserted.
"""

from __future__ import annotations

import argparse

from bench_sip_parse import rate  # the same CPU-time rate measure as the parse benchmark

from phone_sim.sip.digest import (
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    DigestResponse,
    DigestServer,
    _parse_auth_list,
    _parse_auth_list_general,
    compute_response,
)

CHALLENGE = (
    'Digest realm="asterisk", nonce="1732780000/0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d",'
    ' opaque="5e4d3c2b1a0f9e8d", algorithm=MD5, qop="auth"'
)
URI = "sip:pbx.example.com"




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.3)
    args = ap.parse_args()

    server = DigestServer("asterisk", secret=b"s" * 32)
    now = 1000.0
    challenge_text = str(server.challenge(now))
    client = DigestClient(DigestCredentials("101", "1234"), cnonce_factory=lambda: "abcdef0123")
    (challenge,) = DigestChallenge.parse(challenge_text)
    attempt = client.respond([challenge], method="REGISTER", uri=URI)
    (_, authorization), *_ = attempt.headers
    passwords = {"101": "1234"}
    answer = DigestResponse.parse(authorization)
    assert server.verify(
        authorization, method="REGISTER", passwords=passwords, now=now, request_uri=URI
    ).ok
    assert _parse_auth_list(authorization) == _parse_auth_list_general(authorization)

    def respond() -> None:
        client.respond([challenge], method="REGISTER", uri=URI)

    def verify() -> None:
        # After the first call each one is a replay: every check runs and the last one (the
        # nonce count) refuses it, which costs what accepting a fresh answer costs.
        server.verify(authorization, method="REGISTER", passwords=passwords, now=now,
                      request_uri=URI)

    def hashes() -> None:
        compute_response(
            algorithm="MD5", username="101", realm="asterisk", password="1234",
            nonce=answer.nonce, method="REGISTER", uri=URI, qop="auth", nc=1,
            cnonce="abcdef0123",
        )  # fmt: skip

    r = args.runs
    s = args.seconds
    figures = {
        "DigestChallenge.parse": rate(lambda: DigestChallenge.parse(CHALLENGE), s, r),
        "DigestClient.respond": rate(respond, s, r),
        "DigestResponse.parse": rate(lambda: DigestResponse.parse(authorization), s, r),
        "DigestServer.verify": rate(verify, s, r),
        "compute_response (floor)": rate(hashes, s, r),
    }
    fast = rate(lambda: _parse_auth_list(authorization), s, r)
    scanner = rate(lambda: _parse_auth_list_general(authorization), s, r)

    print(f"median of {r} runs x {s}s, operations per CPU second")
    for name, value in figures.items():
        print(f"{name:<28}{value:>12,.0f}/s {1e6 / value:>9.1f} µs")
    floor = figures["compute_response (floor)"]
    print(f"{'auth-param fast path':<28}{fast:>12,.0f}/s {1e6 / fast:>9.1f} µs")
    print(f"{'auth-param scanner (base)':<28}{scanner:>12,.0f}/s {1e6 / scanner:>9.1f} µs")
    print(f"x scanner: the fast path is {fast / scanner:.1f}x the scanner's rate")
    print(
        f"x hashes: verify costs {floor / figures['DigestServer.verify']:.2f}x"
        " compute_response alone"
    )


if __name__ == "__main__":
    main()
