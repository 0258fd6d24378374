"""Where SIP messages go: response routing (RFC 3261 18.2.2 with RFC 3581) and the default
port of each transport (RFC 3261 19.1.2), written once for the phone and the lab."""

from __future__ import annotations

from phone_sim.sip.headers import Via

__all__ = ["Address", "default_port", "response_destination"]

#: A transport address: ``(host, port)``. The host may be a name; the adapter resolves it.
Address = tuple[str, int]


def default_port(transport: str) -> int:
    """5061 for TLS (and ``sips:``), 5060 for UDP and TCP (RFC 3261 19.1.2)."""
    return 5061 if transport.upper() in ("TLS", "SIPS", "WSS") else 5060


def response_destination(via: Via, source: Address, *, reliable: bool) -> Address:
    """Where the response to a request whose top Via is *via* goes.

    RFC 3261 18.2.2: on a reliable transport, back on the connection the request came on
    (*source*). Otherwise to ``received`` (else the sent-by host) and, RFC 3581 4, to the
    ``rport`` value when the request asked for it (the source port when it is still a bare
    flag), else the sent-by port, else the Via transport's default port.
    """
    if reliable:
        return source
    host = via.received or via.host
    if host.startswith("["):
        host = host[1:-1]
    rport = via.rport
    if rport is True:
        return (host, source[1])
    if isinstance(rport, int):
        return (host, rport)
    return (host, via.port or default_port(via.transport))
