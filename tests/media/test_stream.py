"""The sans-I/O media stream: two streams wired in memory on a fake clock."""

from __future__ import annotations

import base64
import logging
import os
import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.media import payloads
from phone_sim.media.codecs import get_codec
from phone_sim.media.dtmf import DtmfError
from phone_sim.media.sinks import ToneDetector
from phone_sim.media.sources import tone
from phone_sim.media.stream import (
    DtmfReceived,
    MediaStream,
    MediaStreamError,
    RtcpByeReceived,
    ToneDetected,
)

Filter = Callable[[list[bytes]], list[bytes]]


def make_pair(
    codec: str = "PCMU",
    *,
    srtp: bool = True,
    freq_a: float = 1000.0,
    freq_b: float = 1633.0,
    seed: int = 1,
    rtcp_interval: float = 1.0,
) -> tuple[MediaStream, MediaStream]:
    c = get_codec(codec)
    key_a = key_b = None
    if srtp:
        key_a, key_b = os.urandom(30), os.urandom(30)
    a = MediaStream(
        codec=c, tx_key=key_a, rx_key=key_b, source=tone(c, freq_a),
        sinks=[ToneDetector(c, freq_b, sample_every=5)], rng=random.Random(seed),
        rtcp_interval=rtcp_interval,
    )
    b = MediaStream(
        codec=c, tx_key=key_b, rx_key=key_a, source=tone(c, freq_b),
        sinks=[ToneDetector(c, freq_a, sample_every=5)], rng=random.Random(seed + 1),
        rtcp_interval=rtcp_interval,
    )
    return a, b


def run(
    a: MediaStream,
    b: MediaStream,
    seconds: float,
    *,
    a_to_b: Filter = lambda p: p,
    b_to_a: Filter = lambda p: p,
    start: float = 0.0,
    delay: float = 0.01,
) -> float:
    """Drive both streams on a fake clock; each batch of datagrams arrives ``delay`` later."""
    if not a.started:
        a.start(start)
        b.start(start)
    now = start
    step = 0.005
    in_flight: list[tuple[float, MediaStream, bytes]] = []
    while now < start + seconds:
        for src, dst, flt in ((a, b, a_to_b), (b, a, b_to_a)):
            out = src.packets_to_send(now) + src.rtcp_to_send(now)
            in_flight.extend((now + delay, dst, d) for d in flt(out))
        due = [x for x in in_flight if x[0] <= now]
        in_flight = [x for x in in_flight if x[0] > now]
        for at, dst, data in due:
            dst.receive_datagram(data, at)
        now += step
    return now


def events(stream: MediaStream) -> list[object]:
    out: list[object] = []
    while (event := stream.next_event()) is not None:
        out.append(event)
    return out


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "G722"])
def test_each_side_detects_the_others_tone(codec: str) -> None:
    a, b = make_pair(codec)
    run(a, b, 2.0)
    got_a, got_b = events(a), events(b)
    assert any(isinstance(e, ToneDetected) and e.frequency_hz == 1633.0 for e in got_a)
    assert any(isinstance(e, ToneDetected) and e.frequency_hz == 1000.0 for e in got_b)
    for s in (a, b):
        st = s.statistics()
        assert st.packets_sent == 100
        assert st.packets_received == 100
        assert st.packets_lost == 0
        assert st.srtp_auth_failures == 0
        assert st.mos_received > 4.3


def test_wrong_tone_is_not_detected() -> None:
    a, b = make_pair(freq_a=1000.0, freq_b=1000.0)
    b.sinks = [ToneDetector(b.codec, 1400.0, sample_every=5)]
    run(a, b, 1.0)
    assert not [e for e in events(b) if isinstance(e, ToneDetected)]


def test_wrong_key_means_nothing_is_heard_and_failures_are_counted() -> None:
    c = get_codec("PCMU")
    a = MediaStream(codec=c, tx_key=os.urandom(30), rx_key=os.urandom(30), source=tone(c, 1000))
    b = MediaStream(codec=c, tx_key=os.urandom(30), rx_key=os.urandom(30),
                    sinks=[ToneDetector(c, 1000, sample_every=2)])
    run(a, b, 1.0)
    st = b.statistics()
    assert st.packets_received == 0
    assert st.srtp_auth_failures >= 50
    assert not events(b)


def test_statistics_under_injected_loss() -> None:
    a, b = make_pair(rtcp_interval=100.0)
    sent = [0]

    def drop_every_tenth(packets: list[bytes]) -> list[bytes]:
        kept = []
        for p in packets:
            sent[0] += 1
            if sent[0] % 10 != 5:
                kept.append(p)
        return kept

    run(a, b, 2.0, a_to_b=drop_every_tenth)
    st = b.statistics()
    assert st.packets_expected == 100
    assert st.packets_lost == 10
    assert st.packets_received == 90
    assert st.reordered == 0 and st.duplicates == 0
    assert st.mos_received < a.statistics().mos_received - 0.5


def test_statistics_under_injected_reordering_and_duplication() -> None:
    a, b = make_pair(rtcp_interval=100.0)
    held: list[bytes] = []
    count = [0]

    def swap_pairs_and_duplicate(packets: list[bytes]) -> list[bytes]:
        out = []
        for p in packets:
            count[0] += 1
            if count[0] % 20 == 3:
                held.append(p)  # send it after the next one
                continue
            out.append(p)
            if held:
                out.extend(held)
                held.clear()
        return out

    run(a, b, 2.0, a_to_b=swap_pairs_and_duplicate)
    st = b.statistics()
    assert st.reordered == 5
    assert st.packets_lost == 0
    assert st.packets_received == 100


def test_duplicates_are_counted_once_srtp_off() -> None:
    # With SRTP the replay window drops the copy first; in plain RTP the stats see it.
    a, b = make_pair(srtp=False, rtcp_interval=100.0)
    run(a, b, 1.0, a_to_b=lambda ps: ps + ps[:1])
    st = b.statistics()
    assert st.duplicates == 50
    assert st.packets_received == 50


def test_replayed_srtp_is_counted_as_replay() -> None:
    a, b = make_pair(rtcp_interval=100.0)
    run(a, b, 1.0, a_to_b=lambda ps: ps + ps[:1])
    st = b.statistics()
    assert st.srtp_replay_failures == 50
    assert st.duplicates == 0


def test_jitter_is_zero_for_steady_arrival_and_grows_with_variation() -> None:
    a, b = make_pair(rtcp_interval=100.0)
    run(a, b, 1.0)
    assert b.statistics().jitter < 0.0005
    c, d = make_pair(rtcp_interval=100.0)
    c.start(0.0)
    d.start(0.0)
    rng = random.Random(3)
    now = 0.0
    for _ in range(100):
        for p in c.packets_to_send(now):
            d.receive_datagram(p, now + rng.uniform(0, 0.02))
        now += 0.02
    assert 0.003 < d.statistics().jitter < 0.012


def test_rtcp_reports_are_exchanged_and_rtt_measured() -> None:
    a, b = make_pair(rtcp_interval=0.5)
    run(a, b, 4.0, delay=0.02)
    for s in (a, b):
        st = s.statistics()
        assert st.rtcp_sr_sent >= 3
        assert st.rtcp_sr_received >= 3
        assert st.rtt is not None
        assert 0.035 < st.rtt < 0.05  # 2 x 20 ms, within the 5 ms stepping of the fake clock
        assert st.remote is not None and st.remote.packets_lost == 0
        assert st.mos_sent is not None


def test_stray_unprotected_rtcp_does_not_end_the_call() -> None:
    a, b = make_pair()
    a.start(0.0)
    b.start(0.0)
    bye = struct.pack("!BBHI", 0x81, 203, 1, 0x1234)
    b.receive_datagram(bye, 0.0, rtcp=True)
    b.receive_datagram(b"\x80\xc8", 0.0)  # garbage that looks like RTCP
    b.receive_datagram(b"", 0.0)
    run(a, b, 1.0)
    st = b.statistics()
    assert st.rtcp_unprotected == 1  # the plain BYE
    assert st.malformed == 2  # two bytes of "RTCP", and an empty datagram
    assert st.srtp_auth_failures == 0 and st.srtp_replay_failures == 0
    assert st.packets_received == 50
    assert not [e for e in events(b) if isinstance(e, RtcpByeReceived)]


def test_stop_sends_bye_the_peer_sees() -> None:
    a, b = make_pair()
    end = run(a, b, 0.5)
    for data in a.stop(end):
        b.receive_datagram(data, end, rtcp=True)
    assert a.packets_to_send(end + 1) == []
    byes = [e for e in events(b) if isinstance(e, RtcpByeReceived)]
    assert [e.ssrc for e in byes] == [a.ssrc]


def test_dtmf_digits_arrive_once_each_despite_loss() -> None:
    a, b = make_pair(rtcp_interval=100.0)
    a.start(0.0)
    b.start(0.0)
    a.send_dtmf("1#9", duration_ms=100)
    count = [0]

    def drop_every_seventh(packets: list[bytes]) -> list[bytes]:
        kept = []
        for p in packets:
            count[0] += 1
            if count[0] % 7:
                kept.append(p)
        return kept

    run(a, b, 2.0, a_to_b=drop_every_seventh)
    digits = [e for e in events(b) if isinstance(e, DtmfReceived)]
    assert "".join(d.digit for d in digits) == "1#9"
    assert all(d.duration_ms == 100 for d in digits)
    assert b.statistics().packets_lost > 0


def test_plain_rtp_when_encryption_is_off() -> None:
    a, _ = make_pair(srtp=False)
    a.start(0.0)
    packet = a.packets_to_send(0.0)[0]
    assert packet[0] == 0x80 and packet[1] == 0
    assert len(packet) == 12 + 160


def test_keys_never_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    a, b = make_pair()
    keys = [os.urandom(30)]
    c = MediaStream(codec="PCMU", tx_key=keys[0], rx_key=keys[0])
    run(a, b, 0.5)
    texts = [repr(c), repr(c.srtp), repr(c.statistics()), caplog.text]
    for text in texts:
        assert keys[0].hex() not in text
        assert base64.b64encode(keys[0]).decode() not in text
        assert repr(keys[0]) not in text


def test_same_keys_keep_the_context_new_keys_replace_it() -> None:
    k1, k2 = os.urandom(30), os.urandom(30)
    s = MediaStream(codec="PCMU", tx_key=k1, rx_key=k2)
    ctx = s.srtp
    assert ctx is not None
    sessions = (ctx._tx, ctx._rx)
    s.update(0.0, tx_key=k1, rx_key=k2)
    assert s.srtp is ctx and (ctx._tx, ctx._rx) == sessions
    s.update(0.0, tx_key=os.urandom(30), rx_key=k2)
    assert ctx._tx is not sessions[0] and ctx._rx is sessions[1]


def test_direction_controls_sending() -> None:
    s = MediaStream(codec="PCMU", direction="recvonly")
    s.start(0.0)
    assert s.packets_to_send(1.0) == []
    assert s.next_send_at == float("inf")
    s.update(1.0, direction="sendrecv")
    assert len(s.packets_to_send(1.0)) == 1
    s.update(1.02, direction="inactive")
    assert s.packets_to_send(2.0) == []
    with pytest.raises(DtmfError, match="inactive"):
        s.send_dtmf("1")


def test_stall_skips_instead_of_bursting() -> None:
    s = MediaStream(codec="PCMU", rng=random.Random(5))
    s.start(0.0)
    s.packets_to_send(0.0)
    burst = s.packets_to_send(1.0)  # one second late
    assert len(burst) == 3
    assert s.skipped_packets == 47  # 50 slots in 0.02-1.0 s, 3 sent
    assert s.statistics().skipped_packets == 47
    assert s.next_send_at > 1.0


def test_accepts_payload_table_entries() -> None:
    s = MediaStream(codec=payloads.G722, payload_type=9)
    assert s.codec.sample_rate == 16000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codec": "G729"}, "G729"),
        ({"codec": "PCMU", "ptime_ms": 25}, "ptime 25"),
        ({"codec": "PCMU", "direction": "both"}, "direction 'both'"),
        ({"codec": "PCMU", "tx_key": b"x" * 30}, "both SRTP keys"),
        ({"codec": "PCMU", "tx_key": b"x" * 29, "rx_key": b"y" * 29}, "30 bytes"),
        ({"codec": "PCMU", "payload_type": 200}, "payload type 200"),
        ({"codec": "PCMU", "dtmf_payload_type": 0}, "share a payload type"),
        ({"codec": "PCMU", "source": tone(get_codec("PCMA"), 440)}, "source is encoded"),
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs: dict[str, object], message: str) -> None:
    from phone_sim.errors import UsageError

    with pytest.raises(UsageError, match=message):
        MediaStream(**kwargs)  # type: ignore[arg-type]


def test_unknown_payload_types_and_malformed_rtp_are_counted() -> None:
    s = MediaStream(codec="PCMU")
    s.start(0.0)
    s.receive_datagram(struct.pack("!BBHII", 0x80, 96, 1, 0, 7) + b"x", 0.0)
    s.receive_datagram(b"\x40" + bytes(20), 0.0)  # version 1
    s.receive_datagram(b"\x80\x00", 0.0)
    st = s.statistics()
    assert st.unknown_payload_type == 1
    assert st.malformed == 2
    assert MediaStreamError.__mro__[1].__name__ == "UsageError"


@given(st.lists(st.binary(max_size=80), max_size=20), st.booleans())
def test_garbage_datagrams_never_raise(datagrams: list[bytes], srtp: bool) -> None:
    key = b"k" * 30 if srtp else None
    detector = ToneDetector(get_codec("PCMU"), 1000, sample_every=1)
    s = MediaStream(codec="PCMU", tx_key=key, rx_key=key, sinks=[detector])
    s.start(0.0)
    for i, data in enumerate(datagrams):
        s.receive_datagram(data, i * 0.02)
        s.receive_datagram(data, i * 0.02, rtcp=True)
        s.receive_datagram(b"\x80\xc8" + data, i * 0.02)  # looks like an SR
        s.receive_datagram(b"\x80\x00" + data, i * 0.02)  # looks like PCMU
    stats = s.statistics()
    if srtp:
        # Nothing unauthenticated gets through, and every datagram is counted once, somewhere.
        assert stats.packets_received == 0 and stats.rtcp_sr_received == 0
        dropped = (stats.srtp_auth_failures + stats.srtp_replay_failures
                   + stats.rtcp_unprotected + stats.malformed)
        assert dropped == 4 * len(datagrams)
        assert not detector.detected
    else:
        assert stats.srtp_auth_failures == stats.rtcp_unprotected == 0
        assert stats.packets_received + stats.duplicates <= 2 * len(datagrams)


@given(st.binary(min_size=12, max_size=200))
def test_plain_rtp_with_any_payload_is_accepted(payload: bytes) -> None:
    s = MediaStream(codec="PCMU", sinks=[ToneDetector(get_codec("PCMU"), 1000, sample_every=1)])
    s.start(0.0)
    s.receive_datagram(struct.pack("!BBHII", 0x80, 0, 1, 0, 5) + payload, 0.0)
    assert s.statistics().packets_received == 1


def test_peer_numbering_of_payload_types_is_honoured() -> None:
    c = get_codec("PCMU")
    a = MediaStream(codec=c, dtmf_payload_type=96, rtcp_interval=100.0)  # peer: DTMF on 96
    b = MediaStream(codec=c, dtmf_payload_type=101, rx_dtmf_payload_type=96, rtcp_interval=100.0)
    a.send_dtmf("5")
    run(a, b, 0.6)
    assert [e.digit for e in events(b) if isinstance(e, DtmfReceived)] == ["5"]
    assert b.statistics().unknown_payload_type == 0


def test_rekey_is_per_direction_and_keeps_the_unchanged_session() -> None:
    tx, rx = os.urandom(30), os.urandom(30)
    sender = MediaStream(codec="PCMU", tx_key=rx, rx_key=tx, rng=random.Random(1))
    s = MediaStream(codec="PCMU", tx_key=tx, rx_key=rx)
    sender.start(0.0)
    s.start(0.0)
    packet = sender.packets_to_send(0.0)[0]
    s.receive_datagram(packet, 0.0)
    s.update(0.0, tx_key=os.urandom(30), rx_key=rx)  # only our key changes
    s.receive_datagram(packet, 0.01)  # the receive session (and its replay window) is kept
    assert s.statistics().srtp_replay_failures == 1
    s.update(0.0, rx_key=os.urandom(30))  # the peer's key changes: a new receive session
    s.receive_datagram(sender.packets_to_send(0.02)[0], 0.02)
    assert s.statistics().srtp_auth_failures == 1
    plain = MediaStream(codec="PCMU")
    with pytest.raises(MediaStreamError, match="needs both keys"):
        plain.update(0.0, tx_key=tx)


def test_from_negotiated() -> None:
    from phone_sim.media.negotiation import Direction, NegotiatedAudio, SrtpKeys

    tx, rx = os.urandom(30), os.urandom(30)
    negotiated = NegotiatedAudio(
        local_host="127.0.0.1", local_rtp_port=4000, remote_host="127.0.0.1",
        remote_rtp_port=5000, remote_rtcp_host="127.0.0.1", remote_rtcp_port=5001,
        codec=payloads.G722, payload_type=9, rx_payload_type=9, dtmf_payload_type=101,
        rx_dtmf_payload_type=96, ptime_ms=30, direction=Direction.SENDONLY,
        srtp=SrtpKeys(tag=1, tx_key=tx, rx_key=rx), tx_key_changed=True, rx_key_changed=True,
    )
    s = MediaStream.from_negotiated(negotiated)
    assert (s.codec.name, s.payload_type, s.rx_dtmf_payload_type, s.ptime_ms) == ("G722", 9, 96, 30)
    assert s.sending and s.direction == "sendonly"
    assert s.srtp is not None and s.srtp.keys_equal(tx_key=tx, rx_key=rx)


def _asterisk_echo_packets(rng: random.Random) -> list[tuple[bytes, float]]:
    """What Asterisk 22's Echo sent back for ``--dtmf 123``: PCMU whose timestamps are near
    4,095,395,656, and RFC 4733 events (payload type 101) whose timestamps start at 192, each
    event's packets sharing one timestamp and its end sent three times. Each datagram with its
    arrival: 20 ms apart plus up to 1 ms of network jitter."""
    out: list[tuple[bytes, float]] = []
    seq, audio_ts, slot = 5000, 4_095_395_656, 0

    def send(pt: int, ts: int, payload: bytes, *, marker: bool = False) -> None:
        nonlocal seq, slot
        header = struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, ts, 0x5EED)
        out.append((header + payload, slot * 0.02 + rng.uniform(0, 0.001)))
        seq = (seq + 1) & 0xFFFF
        slot += 1

    def audio(count: int) -> None:
        nonlocal audio_ts
        for _ in range(count):
            send(0, audio_ts, b"\xff" * 160)
            audio_ts = (audio_ts + 160) & 0xFFFFFFFF

    audio(100)
    event_ts = 192
    for digit in (1, 2, 3):
        for i in range(1, 6):  # 100 ms of event, one update every 20 ms, the same timestamp
            send(101, event_ts, struct.pack("!BBH", digit, 10, i * 160), marker=i == 1)
            audio_ts = (audio_ts + 160) & 0xFFFFFFFF  # the audio clock runs on meanwhile
        for _ in range(3):
            send(101, event_ts, struct.pack("!BBH", digit, 0x80 | 10, 800))
            audio_ts = (audio_ts + 160) & 0xFFFFFFFF
        event_ts += 1600
        audio(25)
    audio(50)
    return out


def test_asterisk_telephone_events_keep_jitter_and_mos_sane() -> None:
    """Issue #9: against Asterisk's Echo the phone reported 97,217 ms of jitter and MOS 2.22."""
    s = MediaStream(codec="PCMU", rtcp_interval=100.0)
    s.start(0.0)
    rng = random.Random(9)
    packets = _asterisk_echo_packets(rng)
    for data, at in packets:
        s.receive_datagram(data, at)
    st = s.statistics()
    assert [e.digit for e in events(s) if isinstance(e, DtmfReceived)] == ["1", "2", "3"]
    assert st.unknown_payload_type == 0 and st.packets_lost == 0
    assert st.packets_received == len(packets)
    assert st.jitter < 0.001  # up to 1 ms of network jitter (uniform: about 0.33 ms)
    assert st.mos_received > 4.3
