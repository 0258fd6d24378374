"""What can go wrong while a phone provisions itself, with the CLI's exit codes.

1 means the thing under test said no or misbehaved (the server refused the phone, sent no or
a bad configuration, no server answered discovery); 2 means the network or the command line
(no answer, a connection refused), as for every phone-sim command.
"""

from __future__ import annotations

from phone_sim.errors import RemoteError

__all__ = [
    "ConfigFetchError",
    "ConfigNotFound",
    "ConfigRefused",
    "ConfigUnusable",
    "DiscoveryFailed",
    "ProvisioningError",
]


class ProvisioningError(RemoteError):
    """Provisioning failed."""


class ConfigFetchError(ProvisioningError):
    """The configuration could not be fetched: no answer, a broken reply, a server error."""

    exit_code = 2


class ConfigRefused(ProvisioningError):
    """The server refused to give this phone a configuration (unknown phone, wrong or
    missing PIN)."""

    exit_code = 1

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ConfigNotFound(ProvisioningError):
    """The server has no configuration for this phone (HTTP 404, no network for it)."""

    exit_code = 1


class ConfigUnusable(ProvisioningError):
    """The configuration arrived but cannot configure the phone (bad XML, impossible
    values); the message names the element and attribute."""

    exit_code = 1


class DiscoveryFailed(ProvisioningError):
    """mDNS discovery found no usable server (none, or several and no choice)."""

    exit_code = 1
