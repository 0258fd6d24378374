"""The docs cannot rot: every shell and Python block of README.md and docs/**/*.md runs against
the docs lab, as docs/writing-docs.md describes (the rewrites of hosts, ports and CA files;
commands that run until Ctrl-C; blocks that say why they are not run).

A failure names the file, the line and the output. New docs are picked up by themselves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.lab import DocsLab
from tests.docs.markdown import Block, doc_files, parse_markdown
from tests.docs.rewrite import LabAddress
from tests.docs.run import make_scratch, run_block
from tests.docs.static import check_not_run, check_synopsis, has_synopsis

ROOT = Path(__file__).resolve().parents[1]
#: Per block; a block that needs longer is doing too much for a doc.
BLOCK_TIMEOUT = 120.0


def _collect() -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    errors: list[str] = []
    for path in doc_files(ROOT):
        found, problems = parse_markdown(path, ROOT)
        blocks += found
        errors += problems
    return blocks, errors


BLOCKS, ERRORS = _collect()
RUN = [b for b in BLOCKS if b.kind is not None and b.skip_reason is None]
NOT_RUN = [b for b in BLOCKS if b.kind is not None and b.skip_reason is not None]
SYNOPSES = [b for b in BLOCKS if has_synopsis(b)]


def test_every_doc_follows_the_rules() -> None:
    assert not ERRORS, "\n".join(ERRORS)
    names = {b.name for b in BLOCKS}
    assert "README.md" in names and any(n.startswith("docs/") for n in names)


@pytest.fixture(scope="module")
def docs_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabAddress]:
    with DocsLab(tmp_path_factory.mktemp("docs-lab")) as lab:
        assert lab.address is not None
        yield lab.address


@pytest.mark.timeout(BLOCK_TIMEOUT + 30)
@pytest.mark.parametrize("block", RUN, ids=[b.where for b in RUN])
def test_block_runs(block: Block, docs_lab: LabAddress, tmp_path: Path) -> None:
    started = time.perf_counter()
    outcome = run_block(block, workdir=make_scratch(ROOT, tmp_path / "work"), lab=docs_lab,
                        timeout=BLOCK_TIMEOUT)
    if not outcome.ok:
        pytest.fail(outcome.report(), pytrace=False)
    print(f"{block.where}: {time.perf_counter() - started:.2f} s\n{outcome.output}")


@pytest.mark.parametrize("block", NOT_RUN, ids=[b.where for b in NOT_RUN])
def test_block_not_run_still_holds(block: Block) -> None:
    """What can be checked without running it is checked; then it is reported as skipped,
    with the doc's reason."""
    problems = check_not_run(block, ROOT)
    assert not problems, "\n".join(problems)
    pytest.skip(f"{block.where}: {block.skip_reason}")


@pytest.mark.parametrize("block", SYNOPSES, ids=[b.where for b in SYNOPSES])
def test_synopsis_names_real_options(block: Block) -> None:
    problems = check_synopsis(block)
    assert not problems, "\n".join(problems)
