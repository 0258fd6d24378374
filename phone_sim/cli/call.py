"""``phone-sim call`` and ``phone-sim answer``: SDES-SRTP calls from the command line.

``call`` registers, places a call, plays a tone or a WAV file, optionally checks that an
expected tone is heard and sends DTMF, prints live and final media statistics, and hangs up.
``answer`` registers and answers incoming calls (echo, tone or file), printing each call's
statistics.

Exit statuses: 0 success; 1 the call failed (refused, not answered, ended early) or the
expected tone was not heard; 2 usage error, network error or registration failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phone_sim.cli._phone import (
    add_phone_options,
    call_target,
    error_json,
    phone_config_from_args,
    phone_from_args,
)
from phone_sim.cli._signals import stop_on_signals
from phone_sim.errors import PhoneSimError, UsageError

if TYPE_CHECKING:
    from phone_sim.call.aio import Call, CallStats
    from phone_sim.call.events import CallFinished
    from phone_sim.phone.aio import Phone

__all__ = ["add_parser"]


def _media_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--play", metavar="tone:HZ|FILE.wav",
                   help="what to send: a tone (tone:1004) or a WAV file (looped)")
    p.add_argument("--record", metavar="FILE.wav", help="record what is received")
    p.add_argument("--expect-tone", type=float, metavar="HZ",
                   help="fail (exit 1) unless this tone is heard from the far end")
    p.add_argument("--json", action="store_true", help="print JSON (one object per line)")


def add_parser(subparsers: Any) -> None:
    """Register ``call`` and ``answer``."""
    p = subparsers.add_parser(
        "call", help="register, place an SDES-SRTP call and report its media",
        description="Register, call --to, play --play, check --expect-tone, send --dtmf, "
        "print live and final media statistics and hang up after --duration. Exit 0 success, "
        "1 the call failed or the expected tone was not heard, 2 usage or network error.",
    )
    p.add_argument("--to", required=True, metavar="EXT|URI",
                   help="the extension (600) or a sip: URI to call")
    p.add_argument("--duration", type=float, default=10.0, metavar="SECONDS",
                   help="how long to stay in the call once answered (default 10)")
    p.add_argument("--dtmf", metavar="DIGITS", help="RFC 4733 digits to send once answered")
    p.add_argument("--answer-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the answer (default 30)")
    _media_options(p)
    add_phone_options(p, media=True)
    p.set_defaults(func=run_call)

    a = subparsers.add_parser(
        "answer", help="register and answer incoming SDES-SRTP calls",
        description="Register and answer incoming calls (--echo, or --play), print each "
        "call's statistics when it ends. Runs until Ctrl-C or --count calls. Exit 0 success, "
        "1 a call failed or the expected tone was not heard, 2 usage or network error.",
    )
    a.add_argument("--echo", action="store_true", help="send back what is received")
    a.add_argument("--count", type=int, metavar="N", help="stop after N calls")
    a.add_argument("--max-duration", type=float, default=3600.0, metavar="SECONDS",
                   help="hang up a call after this long (default 3600)")
    _media_options(a)
    add_phone_options(a, media=True)
    a.set_defaults(func=run_answer)


# -- building the phone -----------------------------------------------------------------------


def _check_play(value: str | None) -> tuple[str, float | Path] | None:
    """``--play``, checked before anything is sent: a tone in range, or a WAV file that
    decodes (read whole, as the call will)."""
    if value is None:
        return None
    if value.startswith("tone:"):
        try:
            hz = float(value[5:])
        except ValueError:
            raise UsageError(f"--play {value!r}: tone:HZ needs a number") from None
        if not 20 <= hz <= 3900:
            raise UsageError(f"--play {value!r}: tone frequency must be in 20-3900 Hz")
        return ("tone", hz)
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"--play {value!r}: no such file (or use tone:HZ)")
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError as exc:
        raise UsageError(f"--play {value!r}: cannot read it ({exc.strerror or exc})") from None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise UsageError(f"--play {value!r}: not a WAV file (no RIFF/WAVE header)")
    from phone_sim.media.codecs import get_codec  # noqa: PLC0415 - the media stack is heavy
    from phone_sim.media.sources import SourceError, wav_file  # noqa: PLC0415

    try:
        wav_file(path, get_codec("PCMU"))
    except SourceError as exc:
        # Its messages name the file, which the prefix already does.
        detail = str(exc).replace(f" {str(path)!r}", "").replace(f"{str(path)!r} ", "it ")
        raise UsageError(f"--play {value!r}: {detail}") from None
    return ("file", path)


def _check_common(args: argparse.Namespace) -> None:
    if not args.timeout > 0:
        raise UsageError("--timeout must be positive")
    if args.expect_tone is not None and not 20 <= args.expect_tone <= 3900:
        raise UsageError("--expect-tone must be in 20-3900 Hz")
    if args.record is not None and not Path(args.record).resolve().parent.is_dir():
        raise UsageError(f"--record {args.record!r}: the directory does not exist")


def _emit(args: argparse.Namespace, text: str, obj: dict[str, Any]) -> None:
    print(json.dumps(obj) if args.json else text, flush=True)


def _stats_line(stats: CallStats | None) -> str:
    if stats is None:
        return "no media"
    s = stats.stream
    rtt = "-" if s.rtt is None else f"{s.rtt * 1000:.1f} ms"
    return (f"{stats.codec} {'SRTP' if stats.encrypted else 'RTP'} {stats.direction}: "
            f"sent {s.packets_sent}, received {s.packets_received}, lost {s.packets_lost}, "
            f"jitter {s.jitter * 1000:.1f} ms, rtt {rtt}, SRTP auth failures "
            f"{s.srtp_auth_failures}, MOS {s.mos_received:.2f}")


def _stats_obj(stats: CallStats | None) -> dict[str, Any]:
    return {} if stats is None else stats.as_dict()


def _apply_media(call: Call, play: tuple[str, float | Path] | None, args: argparse.Namespace,
                 *, echo: bool = False) -> None:
    if echo:
        call.echo()
    elif play is not None and play[0] == "tone":
        assert isinstance(play[1], float)
        call.play_tone(play[1])
    elif play is not None:
        assert isinstance(play[1], Path)
        call.play_file(play[1])
    if args.record:
        call.record(args.record)


async def _live(call: Call, args: argparse.Namespace) -> None:
    while True:
        await asyncio.sleep(1.0)
        stats = call.stats
        _emit(args, f"  {_stats_line(stats)}", {"event": "stats", **_stats_obj(stats)})


# -- phone-sim call ---------------------------------------------------------------------------


def run_call(args: argparse.Namespace) -> int:
    """Run ``phone-sim call``."""
    _check_common(args)
    if not args.duration >= 0:
        raise UsageError("--duration must not be negative")
    if not args.answer_timeout > 0:
        raise UsageError("--answer-timeout must be positive")
    if args.dtmf is not None and (not args.dtmf or any(c not in "0123456789*#ABCD"
                                                       for c in args.dtmf.upper())):
        raise UsageError(f"--dtmf {args.dtmf!r}: digits 0-9, *, #, A-D only")
    play = _check_play(args.play)
    config = phone_config_from_args(args)
    target = str(call_target(args.to, config))
    return asyncio.run(_call(phone_from_args(config), target, play, args))


async def _register(phone: Phone, args: argparse.Namespace, text: str) -> int | None:
    """Register: None when registered, else the exit status. With ``--json`` a failure is
    one JSON object (as ``register --json`` prints it); without, it propagates to the one
    line on stderr."""
    try:
        done = await phone.register(timeout=args.timeout)
    except PhoneSimError as exc:
        if not args.json:
            raise
        print(json.dumps({"result": "failed", **error_json(exc)}), flush=True)
        return exc.exit_code
    _emit(args, text.format(server=done.host.label),
          {"event": "registered", "server": done.host.label})
    return None


async def _expect_tone(call: Call, args: argparse.Namespace, answered_at: float,
                       timeout: float) -> None:
    """Wait for the expected tone and say when it came."""
    hz: float = args.expect_tone
    await call.wait_tone(hz, timeout=timeout)
    after = asyncio.get_running_loop().time() - answered_at
    _emit(args, f"heard the {hz:g} Hz tone {after:.1f} s after the answer",
          {"event": "tone-heard", "hz": hz, "after": round(after, 2)})


async def _call(phone: Phone, target: str, play: tuple[str, float | Path] | None,
                args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    with stop_on_signals(lambda _signum: stop.set(), stopping="hanging up and unregistering"):
        return await _call_until(phone, target, play, args, stop)


async def _call_until(phone: Phone, target: str, play: tuple[str, float | Path] | None,
                      args: argparse.Namespace, stop: asyncio.Event) -> int:
    from phone_sim.call.aio import CallFailed  # noqa: PLC0415 - loaded with the phone

    async with phone:
        status = await _register(phone, args, "registered with {server}")
        if status is not None:
            return status
        call = await phone.dial(target)
        _emit(args, f"calling {call.remote}", {"event": "calling", "to": call.remote})
        try:
            await call.wait_answered(timeout=args.answer_timeout)
        except CallFailed as exc:
            _emit(args, str(exc), {"result": "failed", "error": str(exc),
                                   "status": exc.status})
            with contextlib.suppress(PhoneSimError):
                await call.hangup()
            return 1
        answered_at = asyncio.get_running_loop().time()
        _emit(args, f"answered: {_stats_line(call.stats)}",
              {"event": "answered", **_stats_obj(call.stats)})
        _apply_media(call, play, args)
        live = asyncio.ensure_future(_live(call, args))
        failure: str | None = None
        try:
            if args.dtmf:
                await call.send_dtmf(args.dtmf.upper())
            checks = []
            if args.expect_tone is not None:
                checks.append(asyncio.ensure_future(
                    _expect_tone(call, args, answered_at, max(args.duration, 1.0))))
            stopped = asyncio.ensure_future(stop.wait())
            ended = asyncio.ensure_future(call.wait_ended())
            sleeper = asyncio.ensure_future(asyncio.sleep(args.duration))
            await asyncio.wait({sleeper, stopped, ended}, return_when=asyncio.FIRST_COMPLETED)
            for check in checks:
                if not check.done():
                    await asyncio.wait({check}, timeout=0.5)
                if not check.done():
                    check.cancel()
                    failure = f"the {args.expect_tone:g} Hz tone was not heard"
                elif check.exception() is not None:
                    failure = (f"the {args.expect_tone:g} Hz tone was not heard "
                               f"({check.exception()})")
            if ended.done() and not sleeper.done() and not stopped.done():
                finished: CallFinished = ended.result()
                if finished.by_peer and finished.status is None:
                    # A normal hang-up by the peer (a playback that is done) is not a failure
                    # when every expectation held.
                    _emit(args, f"the peer hung up ({finished.reason})",
                          {"event": "hung-up-by-peer", "reason": finished.reason})
                elif failure is None:
                    failure = f"the call ended early: {finished.reason}"
            for task in (sleeper, stopped, ended):
                task.cancel()
        finally:
            live.cancel()
        final = call.stats
        if call.ended is None:
            with contextlib.suppress(PhoneSimError):
                await call.hangup()
        _emit(args, f"final: {_stats_line(final)}",
              {"result": "failed" if failure else "ok", **_stats_obj(final),
               **({"error": failure} if failure else {})})
        if failure:
            _emit(args, f"call failed: {failure}", {"event": "failure", "error": failure})
            return 1
        return 0


# -- phone-sim answer -------------------------------------------------------------------------


def run_answer(args: argparse.Namespace) -> int:
    """Run ``phone-sim answer``."""
    _check_common(args)
    if args.echo and args.play:
        raise UsageError("--echo and --play exclude each other")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if not args.max_duration > 0:
        raise UsageError("--max-duration must be positive")
    play = _check_play(args.play)
    config = phone_config_from_args(args)
    return asyncio.run(_answer(phone_from_args(config), play, args))


async def _answer(phone: Phone, play: tuple[str, float | Path] | None,
                  args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    with stop_on_signals(lambda _signum: stop.set(), stopping="hanging up and unregistering"):
        return await _answer_until(phone, play, args, stop)


async def _answer_until(phone: Phone, play: tuple[str, float | Path] | None,
                        args: argparse.Namespace, stop: asyncio.Event) -> int:
    from phone_sim.call.aio import CallFailed  # noqa: PLC0415 - loaded with the phone

    failures = 0
    handled = 0
    async with phone:
        status = await _register(phone, args, "registered with {server}; waiting for calls")
        if status is not None:
            return status
        while not stop.is_set() and (args.count is None or handled < args.count):
            nxt = asyncio.ensure_future(phone.next_call())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({nxt, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not nxt.done():
                nxt.cancel()
                break
            call = nxt.result()
            handled += 1
            _emit(args, f"incoming call from {call.remote}",
                  {"event": "incoming", "from": call.remote})
            try:
                await call.answer()
            except CallFailed as exc:
                failures += 1
                _emit(args, str(exc), {"event": "failed", "error": str(exc)})
                continue
            _apply_media(call, play, args, echo=args.echo)
            failures += await _serve(call, args, stop)
        return 1 if failures else 0


async def _serve(call: Call, args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Keep one answered call until it ends; 1 if the expected tone was not heard."""
    from phone_sim.call.aio import CallFailed  # noqa: PLC0415 - loaded with the phone

    live = asyncio.ensure_future(_live(call, args))
    answered_at = asyncio.get_running_loop().time()
    failure: str | None = None
    try:
        if args.expect_tone is not None:
            try:
                await _expect_tone(call, args, answered_at, min(args.max_duration, 30.0))
            except CallFailed:
                failure = f"the {args.expect_tone:g} Hz tone was not heard"
        ended = asyncio.ensure_future(call.wait_ended())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ended, stopped}, timeout=args.max_duration,
                           return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        stopped.cancel()
    finally:
        live.cancel()
    final = call.stats
    if call.ended is None:
        with contextlib.suppress(PhoneSimError):
            await call.hangup()
    reason = call.ended.reason if call.ended else "?"
    # The tones heard are in the statistics (tones_heard); whether the expected one came is
    # the result, said once.
    _emit(args, f"call from {call.remote} ended ({reason}): {_stats_line(final)}",
          {"event": "ended", "from": call.remote, "reason": reason, **_stats_obj(final),
           "result": "failed" if failure else "ok", **({"error": failure} if failure else {})})
    if failure:
        _emit(args, failure, {"event": "failure", "error": failure})
        return 1
    return 0
