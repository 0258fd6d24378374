"""Running the matrix over real TLS (a subset; the CLI test runs all of it)."""

from __future__ import annotations

from phone_sim.firmware import FIRMWARE_CLASSES
from phone_sim.tls.aio_matrix import run_matrix
from phone_sim.tls.matrix import Cell, load_golden
from phone_sim.tls.pki import CertKind


async def test_subset_matches_golden() -> None:
    golden = load_golden()
    classes = [c for c in FIRMWARE_CLASSES if c.id in ("no-tls", "2_3_9", "2_9_2+wild")]
    kinds = [CertKind.GOOD, CertKind.WILDCARD_SAN, CertKind.UNKNOWN_CA_WRONG_NAME]
    seen: list[tuple[CertKind, str, Cell]] = []
    result = await run_matrix(
        golden, classes=classes, kinds=kinds, progress=lambda k, c, cell: seen.append((k, c, cell))
    )
    assert result.ok, result.render()
    assert len(seen) == 9
    assert result.observed[(CertKind.WILDCARD_SAN, "2_9_2+wild")] == Cell(connects=True, bitmask=0)


async def test_a_wrong_golden_cell_is_caught() -> None:
    golden = dict(load_golden())
    golden[(CertKind.GOOD, "2_9_0")] = Cell(connects=False, bitmask=0x2)
    classes = [c for c in FIRMWARE_CLASSES if c.id == "2_9_0"]
    result = await run_matrix(golden, classes=classes, kinds=[CertKind.GOOD])
    assert not result.ok
