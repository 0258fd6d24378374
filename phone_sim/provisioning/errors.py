"""What can go wrong while a phone provisions itself, with the CLI's exit codes.

1 means the thing under test said no or misbehaved (the server refused the phone, sent no or
a bad configuration, no server answered discovery); 2 means the network or the command line
(no answer, a connection refused), as for every phone-sim command.

Each error also carries a short ``cause`` (``timeout``, ``connection refused``,
``HTTP 404``, ``refused``...) that a fleet groups failures by; the message says the rest.
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

    #: The cause when the raiser names none.
    default_cause = "failed"

    def __init__(self, message: str, *, cause: str | None = None) -> None:
        super().__init__(message)
        #: A short, groupable cause: ``timeout``, ``connection refused``, ``HTTP 404``...
        self.cause = cause or self.default_cause


class ConfigFetchError(ProvisioningError):
    """The configuration could not be fetched: no answer, a broken reply, a server error."""

    exit_code = 2
    default_cause = "fetch failed"


class ConfigRefused(ProvisioningError):
    """The server refused to give this phone a configuration (unknown phone, wrong or
    missing PIN)."""

    exit_code = 1
    default_cause = "refused"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, cause="pin required" if code == "pin-required" else "refused")
        self.code = code


class ConfigNotFound(ProvisioningError):
    """The server has no configuration for this phone (HTTP 404, no network for it)."""

    exit_code = 1
    default_cause = "not found"


class ConfigUnusable(ProvisioningError):
    """The configuration arrived but cannot configure the phone (bad XML, impossible
    values); the message names the element and attribute."""

    exit_code = 1
    default_cause = "bad config"


class DiscoveryFailed(ProvisioningError):
    """mDNS discovery found no usable server (none, or several and no choice)."""

    exit_code = 1
    default_cause = "no server"
