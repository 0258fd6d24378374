"""TLS client costs: context build, handshake with a shared vs a per-connection context, matrix.

Prints figures and ratios measured in the same run; asserts nothing.

    .venv/bin/python benchmarks/bench_tls_handshake.py [--connections 200]

Why it matters: a load test opens thousands of phones' TLS connections. Building the
``SSL.Context`` loads the public roots (certifi), so it must be built once per firmware
profile and shared; this measures how much that saves.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from phone_sim.firmware import profile_for
from phone_sim.tls._openssl import openssl_version
from phone_sim.tls.aio import open_tls_connection
from phone_sim.tls.aio_matrix import run_matrix
from phone_sim.tls.aio_servers import start_tls_server
from phone_sim.tls.client import TlsClientContext, TrustStore
from phone_sim.tls.matrix import load_golden
from phone_sim.tls.pki import CertKind, generate_test_pki


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.2f} ms"


async def _handshakes(n: int, shared: bool) -> list[float]:
    pki = generate_test_pki()
    trust = TrustStore(ca_certificates=pki.trusted)
    server = await start_tls_server(pki.credentials[CertKind.GOOD_INTERMEDIATE])
    profile = profile_for("D65")
    context = TlsClientContext(profile, trust)
    times: list[float] = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            ctx = context if shared else TlsClientContext(profile, trust)
            transport, _, verdict = await open_tls_connection(
                server.host, server.port, context=ctx, server_name=pki.server_name
            )
            times.append(time.perf_counter() - start)
            assert verdict.connects
            transport.close()
    finally:
        await server.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=200)
    args = parser.parse_args()
    print(f"phone-sim TLS benchmark, {openssl_version()}")

    pki = generate_test_pki()
    trust = TrustStore(ca_certificates=pki.trusted)
    profile = profile_for("D65")
    builds = []
    for _ in range(20):
        start = time.perf_counter()
        TlsClientContext(profile, trust)
        builds.append(time.perf_counter() - start)
    print(f"context build (certifi + private CA), median of 20: {_median_ms(builds)}")

    gens = []
    for _ in range(10):
        start = time.perf_counter()
        generate_test_pki()
        gens.append(time.perf_counter() - start)
    print(
        f"test PKI generation (all {len(CertKind)} kinds, P-256), median of 10: {_median_ms(gens)}"
    )

    shared = asyncio.run(_handshakes(args.connections, shared=True))
    fresh = asyncio.run(_handshakes(args.connections, shared=False))
    ms, mf = statistics.median(shared), statistics.median(fresh)
    print(f"connect+handshake+verdict over loopback, median of {args.connections}:")
    print(f"  shared context       {ms * 1000:.2f} ms  ({1 / ms:.0f}/s sequential)")
    print(f"  context per connect  {mf * 1000:.2f} ms  ({1 / mf:.0f}/s sequential)")
    print(f"  ratio per-connect / shared: {mf / ms:.1f}x")

    start = time.perf_counter()
    result = asyncio.run(run_matrix(load_golden()))
    elapsed = time.perf_counter() - start
    cells = len(result.kinds) * len(result.class_ids)
    print(f"tls-matrix: {cells} cells in {elapsed:.2f} s, all match golden: {result.ok}")


if __name__ == "__main__":
    main()
