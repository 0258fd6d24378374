"""Memory held by idle phone TLS connections, with and without SSL_MODE_RELEASE_BUFFERS.

Prints figures and the ratio measured in the same run; asserts nothing.

    .venv/bin/python benchmarks/bench_tls_memory.py [--connections 1000]

Each client engine completes a handshake against an in-memory server, exchanges one message,
and is then kept idle while the server side is dropped. The growth of the process's resident
set size, divided by the number of connections, is the cost of one idle connection. The
baseline is the same context with MODE_RELEASE_BUFFERS cleared.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ssl
import statistics
import subprocess
import sys

from OpenSSL import SSL

from phone_sim.firmware import profile_for
from phone_sim.tls.aio_servers import server_ssl_context
from phone_sim.tls.client import TlsClientConnection, TlsClientContext, TrustStore
from phone_sim.tls.pki import CertKind, generate_test_pki


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _open(context: TlsClientContext, server_ctx: ssl.SSLContext, name: str) -> TlsClientConnection:
    client = context.connect(name)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(incoming, outgoing, server_side=True)
    client.start()
    for _ in range(10):
        incoming.write(client.data_to_send())
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        back = outgoing.read()
        if not back:
            break
        client.receive_data(back)
    assert client.is_open
    client.send(b"REGISTER sip:pbx SIP/2.0\r\n\r\n")
    incoming.write(client.data_to_send())
    server.read(65536)
    server.write(b"SIP/2.0 200 OK\r\n\r\n")
    client.receive_data(outgoing.read())
    while client.next_event() is not None:
        pass
    return client


def _per_connection(n: int, release: bool) -> float:
    pki = generate_test_pki()
    trust = TrustStore(ca_certificates=pki.trusted, public_roots=False)
    context = TlsClientContext(profile_for("D65"), trust)
    if not release:
        context.ssl_context.clear_mode(SSL.MODE_RELEASE_BUFFERS)
    server_ctx = server_ssl_context(
        pki.credentials[CertKind.GOOD],
        min_version=ssl.TLSVersion.TLSv1_2,
        max_version=ssl.TLSVersion.TLSv1_2,
        ciphers=None,
    )
    _open(context, server_ctx, pki.server_name)  # warm up allocators
    gc.collect()
    before = _rss_bytes()
    held = [_open(context, server_ctx, pki.server_name) for _ in range(n)]
    gc.collect()
    after = _rss_bytes()
    assert len(held) == n
    return (after - before) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--only", choices=["release", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print(_per_connection(args.connections, release=args.only == "release"))
        return
    # Each figure in a fresh process, so allocator growth from one does not hide the other.
    figures = {}
    for mode in ("baseline", "release", "baseline", "release"):
        out = subprocess.run(
            [sys.executable, __file__, "--connections", str(args.connections), "--only", mode],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        figures.setdefault(mode, []).append(float(out))
    release = statistics.median(figures["release"])
    baseline = statistics.median(figures["baseline"])
    print(f"idle TLS 1.2 client connections, {args.connections} per run, 2 runs each")
    print("RSS growth per connection (engine + OpenSSL SSL object + peer chain):")
    print(f"  MODE_RELEASE_BUFFERS (phone-sim)  {release / 1024:.1f} KiB")
    print(f"  without (baseline)                {baseline / 1024:.1f} KiB")
    print(f"  ratio with / without: {release / baseline:.2f}")


if __name__ == "__main__":
    main()
