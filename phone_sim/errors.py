"""The one exception root of phone-sim and its first split.

Every error phone-sim raises on purpose derives from :class:`PhoneSimError`. Below it the
tree separates what the user (or we) asked for wrongly from what a peer did wrongly, so that
callers can tell "fix your command line" from "the server misbehaved".
"""

from __future__ import annotations


class PhoneSimError(Exception):
    """Root of every error phone-sim raises on purpose."""

    #: The process exit status the CLI uses when this error ends a command.
    exit_code: int = 2


class UsageError(PhoneSimError):
    """Local: a bad option, a bad configuration value, an impossible request."""


class RemoteError(PhoneSimError):
    """Remote: the peer sent something wrong, refused us, or could not be reached."""


class ProtocolError(RemoteError):
    """A peer violated a protocol; ``status`` is the SIP status to answer with, if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
