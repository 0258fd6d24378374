"""The top-level CLI: help, version and usage errors."""

from __future__ import annotations

import pytest

from phone_sim.cli import main


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: phone-sim" in capsys.readouterr().err


def test_unknown_command_exits_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("phone-sim ")


def test_every_command_is_mapped_to_the_module_that_defines_it() -> None:
    """``main`` loads only the module of the command it runs; the map must say them all."""
    import argparse

    from phone_sim.cli import COMMANDS, build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == set(COMMANDS)
    for name, module in COMMANDS.items():
        (only,) = [a for a in build_parser(name)._actions
                   if isinstance(a, argparse._SubParsersAction)]
        assert name in only.choices, (name, module)


def test_a_command_loads_only_what_it_needs() -> None:
    """tls-error does not import the lab, the media stack or provisioning (they made every
    command take 0.7 s to start)."""
    import subprocess
    import sys

    code = ("import sys; from phone_sim.cli import main; main(['tls-error', '0x2']); "
            "print(sorted(m for m in sys.modules if m.startswith(('phone_sim.lab', "
            "'phone_sim.media', 'phone_sim.provisioning', 'aiortc', 'av'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_help_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--log-level", "INFO", "--help"])
    out = capsys.readouterr().out
    for name in ("tls-check", "tls-error", "tls-matrix", "register", "call", "answer", "lab"):
        assert name in out
