"""The one module that reaches OpenSSL through cryptography's non-public bindings."""

from __future__ import annotations

from phone_sim.tls import _openssl


def test_numbers_become_names_with_the_running_library() -> None:
    names = _openssl.verify_error_names()
    by_name = {v: k for k, v in names.items()}
    # OpenSSL renumbered INVALID_CA from 24 (1.x) to 79 (3.x); the name is what counts.
    assert _openssl.verify_error_name(by_name["INVALID_CA"]) == "INVALID_CA"
    assert _openssl.verify_error_string(by_name["CERT_HAS_EXPIRED"]) == "certificate has expired"
    assert _openssl.openssl_version().startswith("OpenSSL ")


def test_unknown_numbers_have_no_name() -> None:
    assert _openssl.verify_error_name(-1) is None
    assert _openssl.verify_error_name(10**6) is None


def test_every_name_is_unique_per_number() -> None:
    names = _openssl.verify_error_names()
    assert len(set(names.values())) == len(names) >= 50
