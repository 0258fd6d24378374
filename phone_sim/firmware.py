"""D-Series models, firmware versions and the capability profile of each (model, firmware).

Everything here follows PROTOCOL-NOTES §5 (the vendor page). Where the notes say the facts are
not public ([?]), the choice is ours and is written down in ``docs/firmware.md``.

>>> profile = profile_for("D65", "2_9_22")
>>> profile.user_agent
'Digium D65 2_9_22'
>>> profile.validates_server
True
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field

from phone_sim.errors import UsageError

__all__ = [
    "DEFAULT_MODEL",
    "FIRMWARE_CLASSES",
    "FIRMWARE_TABLE",
    "FirmwareClass",
    "FirmwareError",
    "FirmwareProfile",
    "FirmwareVersion",
    "Model",
    "TlsVersion",
    "WildcardSettingUnavailable",
    "newest_firmware",
    "profile_for",
]


class FirmwareError(UsageError):
    """A model, a firmware version or a (model, firmware) pair that is not valid."""


class WildcardSettingUnavailable(FirmwareError):
    """``tls_allow_wildcard_certs`` was requested on a firmware that has no such setting."""


class Model(enum.Enum):
    """A D-Series desk phone model."""

    D40 = "D40"
    D45 = "D45"
    D50 = "D50"
    D60 = "D60"
    D62 = "D62"
    D65 = "D65"
    D70 = "D70"
    D80 = "D80"

    @classmethod
    def parse(cls, text: str) -> Model:
        """Return the model named ``text`` (case-insensitive), or raise :class:`FirmwareError`."""
        try:
            return cls(text.strip().upper())
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise FirmwareError(f"unknown phone model {text!r}: expected one of {known}") from None

    def __str__(self) -> str:
        return self.value


class TlsVersion(enum.Enum):
    """A TLS protocol version, as OpenSSL names it."""

    TLSv1 = "TLSv1"
    TLSv1_1 = "TLSv1.1"
    TLSv1_2 = "TLSv1.2"
    TLSv1_3 = "TLSv1.3"

    def __str__(self) -> str:
        return self.value


_FIELD = re.compile(r"[0-9A-Za-z]+")


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class FirmwareVersion:
    """A vendor firmware version such as ``2_2_0_4_5a54ff2`` or ``1_4_0_0_57389``.

    The first (up to) four numeric fields are the version and compare numerically, missing
    fields counting as 0 (``2_9_2`` == ``2_9_2_0``). A field after them (a git hash such as
    ``5a54ff2`` or a build number such as ``57389``) is kept as :attr:`build`, and takes no
    part in comparisons.
    """

    numbers: tuple[int, ...]
    """The numeric fields, two to four of them, as written."""
    build: str | None = None
    """The trailing build number or hash, if any."""

    @classmethod
    def parse(cls, text: str) -> FirmwareVersion:
        """Parse a vendor string; ``.`` is accepted in place of ``_`` (``2.3.9``)."""
        original = text
        text = text.strip()
        problem = _version_problem(text)
        if problem is not None:
            raise FirmwareError(
                f"malformed firmware version {original!r}: {problem} "
                "(expected numeric fields joined by '_', like 2_9_22 or 2_2_0_4_5a54ff2)"
            )
        fields = re.split(r"[_.]", text)
        numbers: list[int] = []
        for item in fields:
            if len(numbers) < 4 and item.isdigit():
                numbers.append(int(item))
            else:
                break
        rest = fields[len(numbers) :]
        return cls(tuple(numbers), rest[0].lower() if rest else None)

    @property
    def key(self) -> tuple[int, int, int, int]:
        """The comparison key: the numeric fields padded with zeros to four."""
        padded = (*self.numbers, 0, 0, 0, 0)
        return (padded[0], padded[1], padded[2], padded[3])

    @property
    def major(self) -> int:
        """The first field: 1 for the 1.x line (D80, early D4x/D50/D70), 2 for the 2.x line."""
        return self.numbers[0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FirmwareVersion):
            return NotImplemented
        return self.key == other.key

    def __lt__(self, other: FirmwareVersion) -> bool:
        if not isinstance(other, FirmwareVersion):
            return NotImplemented
        return self.key < other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        fields = [str(n) for n in self.numbers]
        if self.build is not None:
            fields.append(self.build)
        return "_".join(fields)

    def __repr__(self) -> str:
        return f"FirmwareVersion({str(self)!r})"


def _version_problem(text: str) -> str | None:
    if not text:
        return "it is empty"
    fields = re.split(r"[_.]", text)
    if any(not f for f in fields):
        return "it has an empty field"
    if any(not _FIELD.fullmatch(f) for f in fields):
        return "it has characters other than letters, digits and '_'"
    numeric = 0
    for item in fields:
        if numeric < 4 and item.isdigit():
            numeric += 1
        else:
            break
    if numeric < 2:
        return "it needs at least two numeric fields"
    if len(fields) - numeric > 1:
        return "only one build field may follow the numeric fields"
    if any(len(f) > 9 for f in fields[:numeric]):
        return "a numeric field is too long"
    return None


def _v(text: str) -> FirmwareVersion:
    return FirmwareVersion.parse(text)


# Thresholds from the vendor page (PROTOCOL-NOTES §5).
_TLS_SINCE = _v("2_2_0_4")
_NO_ANON_SINCE = _v("2_3_9")
_VALIDATES_SINCE = _v("2_9_0")
_WILDCARD_SETTING_SINCE = _v("2_9_2")
_D80_TLS_SINCE = _v("1_12_0")
_D80_WILDCARD_SETTING_SINCE = _v("1_12_1")

# [?] Which model shipped on which firmware line is not in the notes; our choice, documented in
# docs/firmware.md: the D80 only ever ran the 1.x line; the D40/D50/D70 started on 1.x and moved
# to 2.x; the D45 and the D6x shipped on the 2.x line.
_LINES: dict[Model, tuple[FirmwareVersion, FirmwareVersion]] = {
    Model.D40: (_v("1_0"), _v("2_999")),
    Model.D45: (_v("2_0"), _v("2_999")),
    Model.D50: (_v("1_0"), _v("2_999")),
    Model.D60: (_v("2_0"), _v("2_999")),
    Model.D62: (_v("2_0"), _v("2_999")),
    Model.D65: (_v("2_0"), _v("2_999")),
    Model.D70: (_v("1_0"), _v("2_999")),
    Model.D80: (_v("1_0"), _v("1_999")),
}

#: Representative firmware strings the project knows, per model family, oldest first. They are
#: the strings seen publicly (PROTOCOL-NOTES §1, §5, the vendor page) plus the class thresholds.
FIRMWARE_TABLE: dict[str, tuple[FirmwareVersion, ...]] = {
    "D4x-D70": tuple(
        _v(s)
        for s in (
            "1_4_0_0_57389",
            "2_0_2_0_78957",
            "2_2_0_4_5a54ff2",
            "2_3_9",
            "2_9_0",
            "2_9_1",
            "2_9_2",
            "2_9_22",
        )
    ),
    "D80": tuple(_v(s) for s in ("1_12_0", "1_12_1")),
}

#: The model ``tls-check`` emulates when none is given.
DEFAULT_MODEL = Model.D65

# TLS 1.0 and 1.1 need security level 0 with a current OpenSSL; so do the anonymous and null
# ciphers. Level 0 also lets SHA-1 signed certificates verify, which matches the OpenSSL
# releases of the firmware's era (docs/tls.md). [?] The vendor's cipher lists are not public.
# Anonymous and null suites go last: offered "also", after the authenticated ones.
_CIPHERS_WITH_ANON = "HIGH:MEDIUM:!RC4:!3DES:-aNULL:-eNULL:aNULL:eNULL:@SECLEVEL=0"
_CIPHERS = "HIGH:MEDIUM:!RC4:!3DES:!aNULL:!eNULL:@SECLEVEL=0"


def newest_firmware(model: Model) -> FirmwareVersion:
    """The newest firmware in :data:`FIRMWARE_TABLE` for ``model``."""
    family = "D80" if model is Model.D80 else "D4x-D70"
    return FIRMWARE_TABLE[family][-1]


@dataclass(frozen=True, kw_only=True)
class FirmwareProfile:
    """What one (model, firmware) pair does, per PROTOCOL-NOTES §5."""

    model: Model
    """The phone model."""
    version: FirmwareVersion
    """The firmware version."""
    tls_supported: bool
    """Whether the firmware does TLS signalling and SDES-SRTP at all."""
    validates_server: bool
    """Whether the server certificate is validated by default (and a failure refuses)."""
    anon_ciphers_offered: bool
    """Whether anonymous (ADH/AECDH) and null ciphers are offered."""
    has_wildcard_setting: bool
    """Whether the firmware has the ``tls_allow_wildcard_certs`` setting."""
    allow_wildcard: bool = False
    """The value of ``tls_allow_wildcard_certs`` (always False without the setting)."""
    tls_min_version: TlsVersion = TlsVersion.TLSv1
    """The lowest TLS version offered."""
    tls_max_version: TlsVersion = TlsVersion.TLSv1_2
    """The highest TLS version offered (never TLS 1.3)."""
    cipher_string: str = _CIPHERS
    """The OpenSSL cipher string, with the security level the versions need."""
    presents_client_certificate: bool = False
    """The phone never presents a client certificate."""
    digest_algorithms: tuple[str, ...] = ("MD5",)
    """SIP digest algorithms the phone answers (MD5 only, as in the D40 trace)."""
    srtp_suites: tuple[str, ...] = field(default=("AES_CM_128_HMAC_SHA1_80",))
    """SDES crypto suites the phone accepts."""

    @property
    def firmware(self) -> str:
        """The firmware string as the phone writes it."""
        return str(self.version)

    @property
    def user_agent(self) -> str:
        """The SIP User-Agent, ``Digium <Model> <firmware>``."""
        return f"Digium {self.model.value} {self.version}"

    @property
    def wildcard_setting(self) -> str | None:
        """The ``tls_allow_wildcard_certs`` value ("0"/"1"), or None without the setting."""
        if not self.has_wildcard_setting:
            return None
        return "1" if self.allow_wildcard else "0"

    @property
    def label(self) -> str:
        """A short human label: ``D65 2_9_22`` plus ``+wildcards`` when the setting is on."""
        suffix = " +wildcards" if self.allow_wildcard else ""
        return f"{self.model.value} {self.version}{suffix}"


def _first_wildcard_firmware(model: Model) -> FirmwareVersion:
    return _D80_WILDCARD_SETTING_SINCE if model is Model.D80 else _WILDCARD_SETTING_SINCE


def profile_for(
    model: Model | str,
    firmware: FirmwareVersion | str | None = None,
    *,
    allow_wildcard: bool = False,
) -> FirmwareProfile:
    """Return the capability profile of ``model`` on ``firmware`` (default: the newest known).

    Raises :class:`FirmwareError` for a malformed version or a pair that never existed (a D80
    on the 2.x line), and :class:`WildcardSettingUnavailable` when ``allow_wildcard`` is asked
    of a firmware without ``tls_allow_wildcard_certs``.
    """
    model = model if isinstance(model, Model) else Model.parse(model)
    if firmware is None:
        version = newest_firmware(model)
    elif isinstance(firmware, FirmwareVersion):
        version = firmware
    else:
        version = FirmwareVersion.parse(firmware)
    low, high = _LINES[model]
    if not low <= version <= high:
        line = "1.x" if high.major == 1 else ("2.x" if low.major == 2 else "1.x and 2.x")
        raise FirmwareError(
            f"a {model.value} never ran firmware {version}: its firmware is on the {line} line"
        )
    if model is Model.D80:
        tls = version >= _D80_TLS_SINCE
        anon = False
        validates = tls
        wildcard_setting = version >= _D80_WILDCARD_SETTING_SINCE
    else:
        tls = version >= _TLS_SINCE
        anon = tls and version < _NO_ANON_SINCE
        validates = version >= _VALIDATES_SINCE
        wildcard_setting = version >= _WILDCARD_SETTING_SINCE
    if allow_wildcard and not wildcard_setting:
        first = _first_wildcard_firmware(model)
        raise WildcardSettingUnavailable(
            f"{model.value} firmware {version} has no tls_allow_wildcard_certs setting; "
            f"it first appears in firmware {first}"
        )
    return FirmwareProfile(
        model=model,
        version=version,
        tls_supported=tls,
        validates_server=validates,
        anon_ciphers_offered=anon,
        has_wildcard_setting=wildcard_setting,
        allow_wildcard=allow_wildcard,
        cipher_string=_CIPHERS_WITH_ANON if anon else _CIPHERS,
    )


@dataclass(frozen=True, kw_only=True)
class FirmwareClass:
    """One row of ``--all-firmwares`` and of the golden table: a representative profile."""

    id: str
    """A short stable identifier, used as the golden table's column name."""
    description: str
    """What distinguishes the class, in a few words."""
    profile: FirmwareProfile
    """The representative profile of the class."""


def _cls(id_: str, description: str, model: Model, fw: str, wild: bool = False) -> FirmwareClass:
    return FirmwareClass(
        id=id_, description=description, profile=profile_for(model, fw, allow_wildcard=wild)
    )


#: The firmware classes of the issue, oldest first, with documented representative strings.
FIRMWARE_CLASSES: tuple[FirmwareClass, ...] = (
    _cls("no-tls", "D6x before 2_2_0_4: no TLS", Model.D65, "2_0_2_0_78957"),
    _cls("2_2_0_4", "no validation, anon ciphers", Model.D65, "2_2_0_4_5a54ff2"),
    _cls("2_3_9", "no validation", Model.D65, "2_3_9"),
    _cls("2_9_0", "validation, wildcards refused", Model.D65, "2_9_0"),
    _cls("2_9_2", "validation, wildcard setting off", Model.D65, "2_9_2"),
    _cls("2_9_2+wild", "validation, wildcard setting on", Model.D65, "2_9_2", True),
    _cls("d80-1_12_0", "D80, validation, wildcards refused", Model.D80, "1_12_0"),
    _cls("d80-1_12_1", "D80, validation, wildcard setting off", Model.D80, "1_12_1"),
    _cls("d80-1_12_1+wild", "D80, validation, wildcard setting on", Model.D80, "1_12_1", True),
)
