"""The one place that reaches OpenSSL through cryptography's bindings, which are not public.

pyOpenSSL's verify callback hands us a bare error *number*; OpenSSL renumbers its errors
between releases, so the number is turned into its ``X509_V_ERR_*`` *name* with the constants
of the OpenSSL actually loaded. pyproject.toml pins cryptography and pyOpenSSL to a range
because of this module.
"""

from __future__ import annotations

import functools
from typing import Any

from OpenSSL import SSL

__all__ = ["openssl_version", "verify_error_name", "verify_error_names", "verify_error_string"]


@functools.cache
def _lib() -> Any:
    from cryptography.hazmat.bindings.openssl.binding import Binding  # noqa: PLC0415

    return Binding.lib


@functools.cache
def _ffi() -> Any:
    from cryptography.hazmat.bindings.openssl.binding import Binding  # noqa: PLC0415

    return Binding.ffi


@functools.cache
def verify_error_names() -> dict[int, str]:
    """Every ``X509_V_ERR_*`` constant the bindings expose: number -> name without prefix."""
    lib = _lib()
    names: dict[int, str] = {}
    for attr in dir(lib):
        if attr.startswith("X509_V_ERR_"):
            value = getattr(lib, attr)
            if isinstance(value, int):
                names.setdefault(value, attr.removeprefix("X509_V_ERR_"))
    return names


def verify_error_name(errnum: int) -> str | None:
    """The symbolic name of verification error ``errnum``, or None when the bindings lack it."""
    return verify_error_names().get(errnum)


def verify_error_string(errnum: int) -> str:
    """OpenSSL's own text for ``errnum`` (e.g. "certificate has expired")."""
    lib = _lib()
    try:
        raw = lib.X509_verify_cert_error_string(errnum)
    except AttributeError:  # pragma: no cover - depends on the bindings
        return f"verification error {errnum}"
    if raw == _ffi().NULL:  # pragma: no cover
        return f"verification error {errnum}"
    return str(_ffi().string(raw).decode("ascii", "replace"))


@functools.cache
def openssl_version() -> str:
    """The version of the OpenSSL pyOpenSSL runs with, e.g. ``OpenSSL 4.0.3 29 Sep 2026``."""
    return SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode("ascii", "replace")
