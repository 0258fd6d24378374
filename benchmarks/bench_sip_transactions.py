"""What a SIP transaction costs in the sans-I/O user agent core, in time and memory.

Run: ``.venv/bin/python benchmarks/bench_sip_transactions.py [--runs 5] [--count 2000]``

Two :class:`~phone_sim.sip.ua.UserAgent` cores are wired together in memory (no sockets, a
fake clock), and for each flow the median over several runs of complete flows per second is
printed:

- OPTIONS: request, automatic 200, response event (1 transaction each side);
- REGISTER with a digest challenge: REGISTER, 401, REGISTER with credentials, 200;
- INVITE, 100, 200, ACK (the ACK for a 2xx is sent outside the transaction);
- timers: one ``handle_timer`` sweep over many live UDP transactions retransmitting.

The baseline, measured in the same run, is ``parse_message`` + ``bytes()`` of the phone's
REGISTER, in distinct variants (user, tags, branch differ; more of them than the parser's
memos hold, so it never finds a value parsed before): every flow is given as a multiple of
that cost per message on the wire. All times are CPU time of this process
(``time.process_time``), so other load on a shared machine inflates them less. Memory per
live client transaction (the Transaction, its context, the request and its wire bytes) is
measured with ``tracemalloc`` over ``--count`` outstanding OPTIONS, and so is the memory of
an idle ``UserAgent`` (one per phone in a fleet). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable

from bench_sip_parse import variants

from phone_sim.sip.digest import DigestCredentials, DigestServer
from phone_sim.sip.headers import NameAddr
from phone_sim.sip.message import _MEMO_SIZE, parse_message
from phone_sim.sip.signature import PhoneSignature
from phone_sim.sip.ua import RequestReceived, ResponseReceived, UaConfig, UserAgent
from phone_sim.sip.uri import SipUri

PHONE = ("127.0.0.1", 5062)
SERVER = ("127.0.0.1", 5060)
AOR = NameAddr(SipUri("sip", "101", None, "127.0.0.1", 5060))
SERVER_URI = SipUri("sip", None, None, "127.0.0.1", 5060)


def make_pair(seed: int = 1) -> tuple[UserAgent, UserAgent]:
    phone = UserAgent(
        UaConfig(local_host=PHONE[0], local_port=PHONE[1], user="101",
                 credentials=(DigestCredentials("101", "1234"),), preemptive_auth=False),
        rng=random.Random(seed),
    )
    server = UserAgent(
        UaConfig(local_host=SERVER[0], local_port=SERVER[1], user="pbx",
                 signature=PhoneSignature(
                     user_agent="bench", allow=("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS",
                                                "REGISTER"))),
        rng=random.Random(seed + 1),
    )
    return phone, server


class Pump:
    """Move datagrams between the two cores and hand server requests to a handler."""

    def __init__(self, phone: UserAgent, server: UserAgent,
                 handler: Callable[[RequestReceived], None] | None = None) -> None:
        self.phone = phone
        self.server = server
        self.handler = handler
        self.datagrams = 0
        self.responses: list[ResponseReceived] = []

    def run(self, now: float) -> None:
        moved = True
        while moved:
            moved = False
            for ua, peer, addr in ((self.phone, self.server, PHONE),
                                   (self.server, self.phone, SERVER)):
                for data, _ in ua.data_to_send():
                    moved = True
                    self.datagrams += 1
                    peer.receive_datagram(data, addr, now)
            while (event := self.phone.next_event()) is not None:
                moved = True
                if isinstance(event, ResponseReceived):
                    self.responses.append(event)
            while (event := self.server.next_event()) is not None:
                moved = True
                if isinstance(event, RequestReceived) and self.handler is not None:
                    self.handler(event)


def flow_options(count: int) -> tuple[float, int]:
    phone, server = make_pair()
    pump = Pump(phone, server)
    start = time.process_time()
    for i in range(count):
        phone.send_request(phone.create_request("OPTIONS", SERVER_URI, from_=AOR), float(i))
        pump.run(float(i))
    return time.process_time() - start, pump.datagrams


def flow_register(count: int) -> tuple[float, int]:
    phone, server = make_pair()
    digest = DigestServer("asterisk", secret=b"b" * 32)
    passwords = {"101": "1234"}
    clock = [0.0]

    def registrar(event: RequestReceived) -> None:
        assert event.transaction is not None
        auth = event.request.headers.get("Authorization")
        if auth and digest.verify(auth, method="REGISTER", passwords=passwords,
                                  now=clock[0]).ok:
            server.respond(event.transaction, 200, clock[0])
        else:
            server.respond(event.transaction, 401, clock[0], headers=[
                ("WWW-Authenticate", str(digest.challenge(clock[0])))])

    pump = Pump(phone, server, registrar)
    start = time.process_time()
    for i in range(count):
        clock[0] = float(i)
        phone.send_request(
            phone.create_request("REGISTER", SERVER_URI, from_=AOR,
                                 headers=[("Expires", "300")]), clock[0])
        pump.run(clock[0])
    elapsed = time.process_time() - start
    assert all(r.response.status == 200 for r in pump.responses)
    return elapsed, pump.datagrams


def flow_invite(count: int) -> tuple[float, int]:
    phone, server = make_pair()
    clock = [0.0]

    def callee(event: RequestReceived) -> None:
        if event.transaction is not None:
            server.respond(event.transaction, 200, clock[0])

    pump = Pump(phone, server, callee)
    start = time.process_time()
    for i in range(count):
        clock[0] = float(i) * 100.0
        target = NameAddr(SERVER_URI)
        handle = phone.send_request(
            phone.create_request("INVITE", SERVER_URI, from_=AOR, to=target), clock[0])
        pump.run(clock[0])
        ok = pump.responses[-1]
        phone.send_ack(handle, ok.response, clock[0])
        pump.run(clock[0])
        # Let Timer L/M expire so state does not pile up across iterations.
        phone.handle_timer(clock[0] + 40.0)
        server.handle_timer(clock[0] + 40.0)
    return time.process_time() - start, pump.datagrams


def timer_sweep(count: int) -> tuple[float, int]:
    phone, _ = make_pair()
    for _ in range(count):
        phone.send_request(phone.create_request("OPTIONS", SERVER_URI, from_=AOR), 0.0)
    phone.data_to_send()
    start = time.process_time()
    phone.handle_timer(0.5)  # every transaction's Timer E fires once
    elapsed = time.process_time() - start
    sent = len(phone.data_to_send())
    return elapsed, sent


def baseline(count: int) -> float:
    phone, _ = make_pair()
    request = phone.create_request("REGISTER", SERVER_URI, from_=AOR, headers=[("Expires", "300")])
    phone.send_request(request, 0.0)
    ((wire, _),) = phone.data_to_send()
    wires = variants(wire, 3 * _MEMO_SIZE)
    start = time.process_time()
    for i in range(count):
        bytes(parse_message(wires[i % len(wires)]))
    return (time.process_time() - start) / count


def memory_per_transaction(count: int) -> float:
    phone, _ = make_pair()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(count):
        phone.send_request(phone.create_request("OPTIONS", SERVER_URI, from_=AOR), 0.0)
    phone.data_to_send()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return total / count


def memory_per_user_agent(count: int) -> float:
    signature = PhoneSignature()
    credentials = (DigestCredentials("101", "1234"),)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    agents = [
        UserAgent(UaConfig(local_host="127.0.0.1", local_port=10000 + i, user=str(i),
                           signature=signature, credentials=credentials),
                  rng=random.Random(i))
        for i in range(count)
    ]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    del agents
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    base = statistics.median(baseline(args.count) for _ in range(args.runs))
    print(f"baseline parse+serialize of a REGISTER never seen: {1 / base:,.0f}/s "
          f"({base * 1e6:.1f} µs)")
    flows: list[tuple[str, Callable[[int], tuple[float, int]]]] = [
        ("OPTIONS round trip", flow_options),
        ("REGISTER with 401 challenge", flow_register),
        ("INVITE/100/200/ACK", flow_invite),
        ("timer sweep (Timer E, per transaction)", timer_sweep),
    ]
    for name, flow in flows:
        results = [flow(args.count) for _ in range(args.runs)]
        elapsed = statistics.median(r[0] for r in results)
        datagrams = results[0][1]
        per_flow = elapsed / args.count
        per_datagram = elapsed / max(datagrams, 1)
        print(
            f"{name:40s} {1 / per_flow:10,.0f}/s  {per_flow * 1e6:8.1f} µs each, "
            f"{datagrams / args.count:.1f} datagrams each, "
            f"{per_datagram / base:.1f}x baseline per datagram"
        )
    size = memory_per_transaction(args.count)
    print(f"memory per live OPTIONS client transaction: {size:,.0f} bytes "
          f"(over {args.count} outstanding)")
    per_ua = memory_per_user_agent(args.count)
    print(f"memory per idle UserAgent (one phone, own Random): {per_ua:,.0f} bytes "
          f"(over {args.count})")


if __name__ == "__main__":
    main()
