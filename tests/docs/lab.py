"""The docs lab: the embedded lab, in this process on a thread of its own, that stands for
"your server" while the docs' blocks run (one for all blocks).

It listens on an address of its own in 127.0.0.0/8 (picked at random, and another one tried
when something holds a port there) on the standard ports, TLS 5061 and TCP/UDP 5060, with the
default accounts 101-106 (password 1234) and the echo at 600. Its certificate names every
server the docs use (``lab.phone-sim.test``, ``pbx.example.com``, ``pbx``) and its address;
the CA key stays here to sign a CRL for ``issuing-ca.crl``.

It plays DPMA too, for the docs' ``phone-sim boot`` examples: the vendor-page sample
``fixtures/dpma/res_digium_phone.conf`` (the phone ``00:0f:d3:01:02:03`` with lines 101 and
102), its addresses turned into the docs lab's, served over the SIP exchange on its TLS port,
over HTTP on 8088 and HTTPS on 8089 (Asterisk's HTTP server's ports), and advertised over
mDNS on 127.0.0.1 under a name of this run's own.
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
from phone_sim.provisioning.aio_dpma import DpmaEmulator
from phone_sim.provisioning.dpma import DpmaConfigError
from phone_sim.provisioning.dpma_conf import read_dpma_conf
from phone_sim.tls.pki import issue_server_certificate, make_ca, make_crl
from tests.docs.rewrite import EXAMPLE_HOSTS, LabAddress

__all__ = ["DocsLab"]

TLS_PORT = 5061
SIP_PORT = 5060
HTTP_PORT = 8088
HTTPS_PORT = 8089
DPMA_CONF = Path(__file__).resolve().parents[2] / "fixtures" / "dpma" / "res_digium_phone.conf"


class DocsLab:
    """``with DocsLab(directory) as lab:`` -> :class:`LabAddress` in ``lab.address``."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="docs-lab",
                                        daemon=True)
        self._lab: Lab | None = None
        self._dpma: DpmaEmulator | None = None
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
        if self._dpma is not None:
            self._call(self._dpma.close())
        if self._lab is not None:
            self._call(self._lab.close())
        self._call(self._settle())
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
        error: Exception | None = None
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
            try:
                name = await self._start_dpma(lab, host, chain_pem, key_pem)
            except DpmaConfigError as exc:  # its HTTP ports held on that address
                await lab.close()
                error = exc
                continue
            self._lab = lab
            assert lab.ca_file is not None
            self.address = LabAddress(host=host, ca_file=lab.ca_file, crl_file=crl_file,
                                      dpma_server=name)
            return
        raise RuntimeError(f"the docs lab found no free address: {error}")

    @staticmethod
    async def _settle() -> None:
        """Let what closing left behind finish (zeroconf's goodbye broadcast), then cancel
        the rest: a task pending when the loop stops is an error at exit."""
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            _, pending = await asyncio.wait(others, timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _start_dpma(self, lab: Lab, host: str, chain_pem: bytes, key_pem: bytes) -> str:
        """The DPMA emulator on *lab*; the instance name it advertises."""
        name = f"phone-sim-docs-{random.getrandbits(32):08x}"
        conf_file = self._directory / "res_digium_phone.conf"
        conf_file.write_text(
            f"#include {DPMA_CONF}\n"
            f"[general](+)\nmdns_address={host}\nservice_name={name}\n"
            f"[tls-network](+)\nregistration_address={host}\n"
            f"file_url_prefix=http://{host}:{HTTP_PORT}/digium_phones\n",
            encoding="utf-8")
        # The lines' passwords are the lab's own (101 and 102: 1234).
        conf = read_dpma_conf(conf_file, passwords=DEFAULT_USERS)
        dpma = DpmaEmulator(conf, lab, cert_chain_pem=chain_pem, key_pem=key_pem,
                            http_port=HTTP_PORT, https_port=HTTPS_PORT,
                            mdns_interfaces=("127.0.0.1",))
        await dpma.start()
        self._dpma = dpma
        return name
