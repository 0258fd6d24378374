"""Applying a phone XML document (:class:`~phone_sim.provisioning.phone_xml.PhoneXml`) to a
phone of a given model and firmware: the resulting :class:`~phone_sim.phone.config.PhoneConfig`
and a report of what phone-sim did not apply.

What each element does:

- ``tls_allow_wildcard_certs`` becomes ``profile_for(..., allow_wildcard=...)``; asking it of
  a firmware without the setting is an error naming the setting;
- ``udp_ka_interval`` becomes ``RegistrationSettings.udp_ka_interval``;
- ``transport_udp_enabled``, ``transport_tcp_enabled`` and ``transport_tls_allowed`` set to 0
  refuse an account that uses that transport (the firmware would never register it);
- ``<certs>`` are added to the phone's trust store;
- ``<firmwares>``: an image for this model with another version is reported ("the phone would
  upgrade to ..."), never installed;
- ``config_server_url`` and ``enable_check_sync`` are kept for the next provisioning round;
- everything else (the transport ports, ``ntp_server``, unknown settings and elements) is
  reported as not used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from phone_sim.account import SipTransport
from phone_sim.call import CallConfig
from phone_sim.firmware import (
    FirmwareProfile,
    FirmwareVersion,
    Model,
    WildcardSettingUnavailable,
    profile_for,
)
from phone_sim.phone import (
    MediaOptions,
    NetworkOptions,
    PhoneConfig,
    PhoneConfigError,
    RegistrationSettings,
)
from phone_sim.provisioning.phone_xml import (
    KNOWN_SETTINGS,
    CaCertificate,
    PhoneXml,
    PhoneXmlError,
    XmlAccount,
    setting_flag,
)
from phone_sim.tls.client import TrustStore

__all__ = [
    "FirmwareUpgrade",
    "ProvisionedConfig",
    "ProvisioningNotice",
    "apply_phone_xml",
    "phone_xml_from_config",
]

_TRANSPORT_SETTINGS = {
    SipTransport.UDP: "transport_udp_enabled",
    SipTransport.TCP: "transport_tcp_enabled",
    SipTransport.TLS: "transport_tls_allowed",
}
#: Settings phone-sim reads; every other known one is reported as not used.
_APPLIED = {"config_server_url", "tls_allow_wildcard_certs", "udp_ka_interval",
            "enable_check_sync", *_TRANSPORT_SETTINGS.values()}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningNotice:
    """Something in the configuration phone-sim reports instead of doing."""

    kind: str
    """``firmware-upgrade``, ``unknown-element``, ``unknown-setting``, ``not-used``."""
    text: str
    """What, in words."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FirmwareUpgrade:
    """The server offers this model another firmware: the phone would install it."""

    current: FirmwareVersion
    """The firmware the phone runs."""
    offered: FirmwareVersion
    """The version offered."""
    url: str | None
    """Where it would be downloaded from."""

    @property
    def text(self) -> str:
        """``the phone would upgrade from 2_9_2 to 2_9_22 (url)``."""
        verb = "upgrade" if self.offered > self.current else "downgrade"
        where = f" ({self.url})" if self.url else ""
        return f"the phone would {verb} from {self.current} to {self.offered}{where}"


@dataclass(frozen=True, kw_only=True)
class ProvisionedConfig:
    """A configuration document applied to one phone."""

    config: PhoneConfig
    """The phone as the document configures it."""
    config_server_url: str | None
    """The ``config_server_url`` setting: where the next provisioning goes."""
    check_sync: bool
    """``enable_check_sync``: a ``NOTIFY Event: check-sync`` makes the phone re-fetch."""
    upgrade: FirmwareUpgrade | None
    """The firmware the server offers this model, when it differs from the running one."""
    notices: tuple[ProvisioningNotice, ...]
    """What was not applied, in document order."""
    document: PhoneXml
    """The document."""


def apply_phone_xml(
    doc: PhoneXml,
    *,
    model: Model | str,
    firmware: FirmwareVersion | str | None = None,
    mac: str | None = None,
    trust: TrustStore | None = None,
    registration: RegistrationSettings | None = None,
    calls: CallConfig | None = None,
    media: MediaOptions | None = None,
    network: NetworkOptions | None = None,
    auto_answer: bool = False,
) -> ProvisionedConfig:
    """The :class:`ProvisionedConfig` of *doc* on a *model* running *firmware*.

    *trust* is what the phone trusts before provisioning (public roots, any CA loaded by
    hand); the document's ``<certs>`` are added to it. The other keyword arguments are the
    parts of a :class:`PhoneConfig` the XML does not describe. Raises
    :class:`~phone_sim.provisioning.phone_xml.PhoneXmlError` naming the element.
    """
    notices: list[ProvisioningNotice] = [
        ProvisioningNotice(kind="not-used", text=note) for note in doc.notes
    ]
    profile = _profile(doc, model, firmware)
    accounts = tuple(xa.account for xa in doc.accounts)
    if not accounts:
        raise PhoneXmlError("the configuration has no <account>: nothing to register",
                            element="accounts")
    for account in accounts:
        if not account.enabled:
            continue
        for tag, host in (("host_primary", account.host_primary),
                          ("host_alternate", account.host_alternate)):
            if host is None:
                continue
            setting = _TRANSPORT_SETTINGS[host.transport]
            if not setting_flag(doc.setting(setting), True):
                raise PhoneXmlError(
                    f'<account index="{account.index}"> <{tag}> transport="{host.transport}" '
                    f'but <setting id="{setting}"> is 0: the phone would never use it',
                    element=tag, attribute="transport",
                )
    base_trust = trust if trust is not None else TrustStore()
    known = set(base_trust.ca_certificates)
    added = tuple(c.certificate for c in doc.certificates if c.certificate not in known)
    phone_trust = (
        replace(base_trust, ca_certificates=base_trust.ca_certificates + added)
        if added else base_trust
    )
    settings = registration or RegistrationSettings()
    ka = doc.setting("udp_ka_interval")
    if ka is not None and ka.strip():
        settings = replace(settings, udp_ka_interval=float(int(ka)))
    for id_, value in doc.settings:
        if id_ in _APPLIED:
            continue
        if id_ in KNOWN_SETTINGS:
            shown = "(hidden)" if id_ == "login_password" else repr(value)
            notices.append(ProvisioningNotice(
                kind="not-used", text=f"setting {id_}={shown} is not used by phone-sim"))
        else:
            notices.append(ProvisioningNotice(
                kind="unknown-setting", text=f"unknown setting {id_!r} kept, not applied"))
    for el in doc.unknown:
        notices.append(ProvisioningNotice(
            kind="unknown-element", text=f"element <{el.path}> kept, not applied"))
    upgrade = _upgrade(doc, profile)
    if upgrade is not None:
        notices.append(ProvisioningNotice(kind="firmware-upgrade", text=upgrade.text))
    try:
        config = PhoneConfig(
            profile=profile,
            accounts=accounts,
            mac=mac,
            trust=phone_trust,
            registration=settings,
            calls=calls or CallConfig(),
            media=media or MediaOptions(),
            network=network or NetworkOptions(),
            auto_answer=auto_answer,
        )
    except PhoneConfigError as exc:
        raise PhoneXmlError(f"<accounts>: {exc}", element="account") from None
    url = doc.setting("config_server_url")
    return ProvisionedConfig(
        config=config,
        config_server_url=url.strip() if url and url.strip() else None,
        check_sync=setting_flag(doc.setting("enable_check_sync"), True),
        upgrade=upgrade,
        notices=tuple(notices),
        document=doc,
    )


def _profile(
    doc: PhoneXml, model: Model | str, firmware: FirmwareVersion | str | None
) -> FirmwareProfile:
    wildcard = setting_flag(doc.setting("tls_allow_wildcard_certs"), False)
    try:
        return profile_for(model, firmware, allow_wildcard=wildcard)
    except WildcardSettingUnavailable as exc:
        raise PhoneXmlError(
            f'<setting id="tls_allow_wildcard_certs" value="1">: {exc}',
            element="setting", attribute="value",
        ) from None


def _upgrade(doc: PhoneXml, profile: FirmwareProfile) -> FirmwareUpgrade | None:
    for image in doc.firmwares:
        if image.model is profile.model and image.version != profile.version:
            return FirmwareUpgrade(current=profile.version, offered=image.version, url=image.url)
    return None


def phone_xml_from_config(
    config: PhoneConfig, *, config_server_url: str | None = None
) -> PhoneXml:
    """The document that configures *config*'s accounts, private CAs, wildcard setting and
    UDP keep-alive: :func:`apply_phone_xml` of it on the same model and firmware gives back
    the same accounts, trust store and profile."""
    settings: list[tuple[str, str]] = []
    if config_server_url:
        settings.append(("config_server_url", config_server_url))
    if config.profile.wildcard_setting is not None:
        settings.append(("tls_allow_wildcard_certs", config.profile.wildcard_setting))
    ka = config.registration.udp_ka_interval
    if ka != RegistrationSettings().udp_ka_interval and float(ka).is_integer():
        settings.append(("udp_ka_interval", str(int(ka))))
    return PhoneXml(
        settings=tuple(settings),
        accounts=tuple(XmlAccount(account=a) for a in config.accounts),
        certificates=tuple(CaCertificate(certificate=c) for c in config.trust.ca_certificates),
    )
