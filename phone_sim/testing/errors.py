"""The error the peer helpers raise for a value they cannot use.

Failures of a running peer are :class:`phone_sim.testing.aio_process.PeerError`; a missing
program is its subclass ``PeerMissing``.
"""

from __future__ import annotations

from phone_sim.errors import UsageError

__all__ = ["PeerUsageError"]


class PeerUsageError(UsageError, ValueError):
    """A peer helper was given something it cannot use: a user or password its
    configuration cannot hold, an empty port list, a tone above Nyquist... Also a
    ``ValueError``, as such mistakes are in Python."""
