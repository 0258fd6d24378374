"""The public API is re-exported from ``phone_sim`` lazily (PEP 562)."""

from __future__ import annotations

import subprocess
import sys

import phone_sim


def test_every_export_resolves_and_is_listed() -> None:
    assert set(phone_sim.__all__) == {"__version__", *phone_sim._EXPORTS}
    for name in phone_sim._EXPORTS:
        value = getattr(phone_sim, name)
        assert getattr(value, "__name__", name) == name


def test_importing_the_package_loads_no_media_stack() -> None:
    # A configuration can be built (and checked) without the media stack.
    code = ("import sys, phone_sim; phone_sim.PhoneConfig; phone_sim.Account; "
            "phone_sim.profile_for; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiortc', 'av')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_lab_cores_load_no_media_stack() -> None:
    # The registrar and proxy cores are plain sans-I/O: importing them (through the lazy
    # package) must not pull in the lab's echo service and with it aiortc and PyAV.
    code = ("import sys; from phone_sim.lab import Registrar, Proxy, LabLimits; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiortc', 'av')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        phone_sim.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def test_subpackages_export_what_they_list() -> None:
    import phone_sim.call
    import phone_sim.lab
    import phone_sim.phone

    for package in (phone_sim.phone, phone_sim.call, phone_sim.lab):
        assert sorted(package.__all__) == sorted(package._EXPORTS)
        for name in package.__all__:
            assert getattr(package, name) is not None
    assert phone_sim.phone.UdpCallAgent is phone_sim.UdpCallAgent
    assert phone_sim.call.Call is phone_sim.Call
    # sip: the message layer eagerly, the user agent core on first use.
    import phone_sim.sip
    from phone_sim.sip.ua import UaConfig, UserAgent

    for name in phone_sim.sip.__all__:
        assert getattr(phone_sim.sip, name) is not None
    assert phone_sim.sip.UserAgent is UserAgent and phone_sim.sip.UaConfig is UaConfig
