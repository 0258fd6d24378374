"""The docs lab: the embedded lab, in this process on a thread of its own, that stands for
"your server" while the docs' blocks run (one for all blocks).

It listens on an address of its own in 127.0.0.0/8 (picked at random, and another one tried
when something holds a port there) on the standard ports, TLS 5061 and TCP/UDP 5060, with the
default accounts 101-106 (password 1234) and the echo at 600. Its certificate names every
server the docs use (``lab.phone-sim.test``, ``pbx.example.com``, ``pbx``) and its address;
the CA key stays here to sign a CRL for ``issuing-ca.crl``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from phone_sim.lab import Lab
from phone_sim.lab.aio import DEFAULT_SERVER_NAME, DEFAULT_USERS, LabError
from phone_sim.tls.pki import issue_server_certificate, make_ca, make_crl
from tests.docs.rewrite import EXAMPLE_HOSTS, LabAddress

__all__ = ["DocsLab"]

TLS_PORT = 5061
SIP_PORT = 5060


class DocsLab:
    """``with DocsLab(directory) as lab:`` -> :class:`LabAddress` in ``lab.address``."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="docs-lab",
                                        daemon=True)
        self._lab: Lab | None = None
        self.address: LabAddress | None = None

    def __enter__(self) -> DocsLab:
        self._thread.start()
        try:
            self._call(self._start())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lab is not None:
            self._call(self._lab.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, coro: object) -> object:
        future: concurrent.futures.Future[object] = asyncio.run_coroutine_threadsafe(
            coro, self._loop  # type: ignore[arg-type]
        )
        return future.result(timeout=60)

    async def _start(self) -> None:
        ca_pem, ca_key_pem = make_ca(cn="phone-sim docs lab root CA")
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        crl_file = self._directory / "issuing-ca.crl"
        crl_file.write_bytes(make_crl(x509.load_pem_x509_certificate(ca_pem), ca_key))
        error: LabError | None = None
        for _ in range(8):
            host = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
            names = [DEFAULT_SERVER_NAME, *(h for h in EXAMPLE_HOSTS if not h[0].isdigit()),
                     host]
            chain_pem, key_pem = issue_server_certificate(ca_pem, ca_key_pem, names)
            lab = Lab(dict(DEFAULT_USERS), host=host, tls_port=TLS_PORT, tcp_port=SIP_PORT,
                      udp_port=SIP_PORT, cert_chain_pem=chain_pem, key_pem=key_pem,
                      ca_pem=ca_pem)
            try:
                await lab.start()
            except LabError as exc:  # a port held on that address (a wildcard listener)
                error = exc
                continue
            self._lab = lab
            assert lab.ca_file is not None
            self.address = LabAddress(host=host, ca_file=lab.ca_file, crl_file=crl_file)
            return
        raise RuntimeError(f"the docs lab found no free address: {error}")
