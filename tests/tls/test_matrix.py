"""Reading the hand-written golden table and comparing a matrix with it."""

from __future__ import annotations

import pytest

from phone_sim.firmware import FIRMWARE_CLASSES
from phone_sim.tls.matrix import Cell, GoldenTableError, MatrixResult, load_golden, parse_golden
from phone_sim.tls.pki import CertKind


def test_golden_table_covers_every_kind_and_class() -> None:
    golden = load_golden()
    assert len(golden) == len(CertKind) * len(FIRMWARE_CLASSES)
    # The vendor page's own example, and the chain-sent root case of the issue.
    assert golden[(CertKind.UNKNOWN_CA_WRONG_NAME, "2_9_2")] == Cell(
        connects=False, bitmask=0x40000022
    )
    assert golden[(CertKind.UNKNOWN_CA, "2_9_0")].bitmask == 0x22
    assert golden[(CertKind.UNKNOWN_CA_ROOT_SENT, "2_9_0")].bitmask == 0x2
    assert all(
        c.bitmask is None and not c.connects for (k, cid), c in golden.items() if cid == "no-tls"
    )


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("ok:0x0", Cell(connects=True, bitmask=0)),
        ("fail:0x40000022", Cell(connects=False, bitmask=0x40000022)),
        ("fail:none", Cell(connects=False, bitmask=None)),
    ],
)
def test_cells(text: str, cell: Cell) -> None:
    assert Cell.parse(text) == cell
    assert Cell.parse(str(cell)) == cell


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "header"),
        ("kind nope\n", "unknown firmware class"),
        ("kind 2_9_0\nbogus ok:0x0\n", "unknown certificate kind"),
        ("kind 2_9_0\ngood ok:0x0 ok:0x0\n", "has 2 cells"),
        ("kind 2_9_0\ngood maybe:0x0\n", "bad golden cell"),
        ("kind 2_9_0\ngood ok:zz\n", "not hex"),
    ],
)
def test_malformed_golden(text: str, message: str) -> None:
    with pytest.raises(GoldenTableError, match=message):
        parse_golden(text)


def test_mismatch_is_reported_and_rendered() -> None:
    golden = parse_golden("kind 2_9_0 2_3_9\ngood ok:0x0 ok:0x0\nexpired fail:0x4 ok:0x4\n")
    observed = dict(golden)
    observed[(CertKind.EXPIRED, "2_9_0")] = Cell(connects=True, bitmask=0)
    result = MatrixResult(
        kinds=(CertKind.GOOD, CertKind.EXPIRED),
        class_ids=("2_9_0", "2_3_9"),
        observed=observed,
        golden=golden,
    )
    assert not result.ok
    assert result.mismatches() == [
        (CertKind.EXPIRED, "2_9_0", Cell(connects=True, bitmask=0), Cell(connects=False, bitmask=4))
    ]
    assert "ok 0x0!=FAIL 0x4" in result.render()
    same = MatrixResult(
        kinds=(CertKind.GOOD,), class_ids=("2_9_0",), observed=golden, golden=golden
    )
    assert same.ok
