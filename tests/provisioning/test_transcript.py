"""The MESSAGE exchange written in docs/provisioning.md, replayed against each side alone.

The phone side (SipConfigClient) gets the server's messages from the transcript and must
produce the phone's messages of the transcript; the emulator side (DpmaSipServer) gets the
phone's and must produce the server's. Random identifiers (Via branch, tags, Call-ID, CSeq
number) are learnt from what each side sends, as SIPp's ``[last_*]`` keywords do; everything
else must match byte for byte.
"""

from __future__ import annotations

import re
from pathlib import Path

from phone_sim.firmware import profile_for
from phone_sim.provisioning.dpma import ConfigRequestAnswered, Dpma, DpmaSite
from phone_sim.provisioning.dpma_conf import read_dpma_conf
from phone_sim.provisioning.exchange import CONFIG_METHOD, ConfigRequest
from phone_sim.provisioning.phone_xml import parse_phone_xml
from phone_sim.provisioning.sip_client import ConfigFetched, SipConfigClient
from phone_sim.provisioning.sip_server import DpmaSipServer
from phone_sim.provisioning.urls import SipConfigUrl, parse_config_url
from phone_sim.sip.message import SipRequest, SipResponse, parse_message
from phone_sim.sip.signature import PhoneSignature

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "provisioning.md"
FIXTURES = ROOT / "fixtures" / "dpma"
PHONE = ("192.0.2.20", 49152)
SERVER = ("192.0.2.10", 5061)
MAC = "000fd3010203"


def _transcript() -> list[tuple[str, bytes]]:
    blocks = re.findall(r"```sip-transcript\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    out = []
    for block in blocks:
        direction, _, message = block.partition("\n")
        head, sep, body = message.partition("\n\n")
        wire = head.rstrip("\n").replace("\n", "\r\n") + "\r\n\r\n" + (body if sep else "")
        out.append((direction.strip("# ").strip(), wire.encode()))
    return out


def _identifiers(message: SipRequest | SipResponse) -> dict[str, str]:
    found = {
        "branch": message.top_via.branch or "",
        "from-tag": message.from_tag or "",
        "to-tag": message.to_tag or "",
        "call-id": message.call_id,
        "cseq": str(message.cseq.seq),
    }
    return {k: v for k, v in found.items() if v}


def _substitute(data: bytes, mapping: dict[str, str]) -> bytes:
    lines = data.decode().split("\r\n")
    head_end = lines.index("")
    out = []
    for original in lines[:head_end]:
        line = original
        if line.startswith("CSeq: "):
            number, _, method = line[6:].partition(" ")
            line = f"CSeq: {mapping.get('cseq:' + number, number)} {method}"
        else:
            for old, new in mapping.items():
                if not old.startswith("cseq:"):
                    line = line.replace(old, new)
        out.append(line)
    return "\r\n".join(out + lines[head_end:]).encode()


class _Learner:
    """Maps the transcript's random identifiers to the ones the side under test made."""

    def __init__(self) -> None:
        self.to_actual: dict[str, str] = {}
        self.to_transcript: dict[str, str] = {}

    def compare(self, actual: bytes, expected: bytes) -> None:
        got, want = parse_message(actual), parse_message(expected)
        ours, theirs = _identifiers(got), _identifiers(want)
        for key, value in theirs.items():
            if key in ours and ours[key] != value and value not in self.to_actual:
                mine = ours[key]
                if key == "cseq":
                    self.to_actual["cseq:" + value] = mine
                    self.to_transcript["cseq:" + mine] = value
                else:
                    self.to_actual[value] = mine
                    self.to_transcript[mine] = value
        assert _substitute(actual, self.to_transcript).decode() == expected.decode()

    def feed(self, expected: bytes) -> bytes:
        return _substitute(expected, self.to_actual)


def _request() -> ConfigRequest:
    return ConfigRequest(method=CONFIG_METHOD, mac=MAC, model="D65", firmware="2_9_2",
                         pin="1111")


def _server_url() -> SipConfigUrl:
    url = parse_config_url("sip:proxy@server.example.com:5061;transport=tls")
    assert isinstance(url, SipConfigUrl)
    return url


def test_the_transcript_has_the_four_messages() -> None:
    directions = [d for d, _ in _transcript()]
    assert directions == ["phone -> server", "server -> phone", "server -> phone",
                          "phone -> server"]


def test_the_phone_side_replays_the_transcript() -> None:
    script = _transcript()
    client = SipConfigClient(
        request=_request(), server=_server_url(), local=PHONE,
        signature=PhoneSignature.for_profile(profile_for("D65", "2_9_2"),
                                             extra_methods=("MESSAGE",)),
    )
    learner = _Learner()
    client.start(0.0, SERVER)
    sent = client.data_to_send()
    assert [d for _, d in sent] == [SERVER]
    learner.compare(sent[0][0], script[0][1])
    client.receive_data(learner.feed(script[1][1]), SERVER, 0.05)
    assert client.data_to_send() == [] and client.next_event() is None
    client.receive_data(learner.feed(script[2][1]), SERVER, 0.1)
    sent = client.data_to_send()
    assert len(sent) == 1
    learner.compare(sent[0][0], script[3][1])
    event = client.next_event()
    assert isinstance(event, ConfigFetched) and event.reply.document is not None
    assert parse_phone_xml(event.reply.document) == parse_phone_xml(
        (FIXTURES / f"{MAC}.cfg").read_bytes())


def test_the_emulator_side_replays_the_transcript() -> None:
    script = _transcript()
    conf = read_dpma_conf(FIXTURES / "res_digium_phone.conf", pjsip=FIXTURES / "pjsip.conf")
    dpma = Dpma(conf, DpmaSite(address=SERVER[0], sip_ports={"tls": SERVER[1]}))
    server = DpmaSipServer(dpma, {"TLS": SERVER})
    learner = _Learner()
    first = parse_message(script[0][1])
    assert server.wants(first)
    server.receive_message(first, "TLS", PHONE, 0.0)
    sent = server.data_to_send()
    assert [(t, d) for t, _, d in sent] == [("TLS", PHONE), ("TLS", PHONE)]
    learner.compare(sent[0][1], script[1][1])
    learner.compare(sent[1][1], script[2][1])
    served = server.next_event()
    assert isinstance(served, ConfigRequestAnswered) and served.phone == "bobby"
    last = parse_message(learner.feed(script[3][1]))
    assert server.wants(last)
    server.receive_message(last, "TLS", PHONE, 0.1)
    assert server.data_to_send() == [] and server.next_event() is None
    assert not server.wants(last)  # answered: the exchange is over
