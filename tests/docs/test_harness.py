"""The docs test's own machinery: reading Markdown, the rewrites, running a block and saying
where it failed, and the checks of blocks it does not run."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tests.docs.markdown import Block, parse_markdown
from tests.docs.rewrite import LabAddress, rewrite_hosts, wrap_shell
from tests.docs.run import make_scratch, run_block
from tests.docs.static import check_not_run, check_synopsis

ROOT = Path(__file__).resolve().parents[2]


def _doc(tmp_path: Path, text: str) -> tuple[list[Block], list[str]]:
    path = tmp_path / "docs" / "x.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return parse_markdown(path, tmp_path)


def _lab(tmp_path: Path) -> LabAddress:
    return LabAddress(host="127.9.8.7", ca_file=tmp_path / "lab-ca.pem",
                      crl_file=tmp_path / "lab.crl")


def test_blocks_languages_and_skip_reasons(tmp_path: Path) -> None:
    blocks, problems = _doc(tmp_path, """\
        # Title

        ```sh
        echo one
        ```

        Not run by the docs test: needs Docker. The rest of the paragraph.

        ```sh
        docker compose up
        ```

        ```text
        output
        ```

        ````python
        print("a ``` inside")
        ````
        """)
    assert problems == []
    assert [(b.line, b.lang, b.kind) for b in blocks] == [
        (3, "sh", "shell"), (9, "sh", "shell"), (13, "text", None), (17, "python", "python")]
    assert blocks[0].skip_reason is None and blocks[1].skip_reason == "needs Docker."
    assert blocks[2].skip_reason is None  # the mark is for the block right after it only
    assert blocks[3].text == 'print("a ``` inside")\n'
    assert blocks[1].where == "docs/x.md:9" and blocks[1].doc_line(1) == 10


def test_broken_rules_are_named_with_file_and_line(tmp_path: Path) -> None:
    _, problems = _doc(tmp_path, """\
        ```
        no language
        ```

        Not run by the docs test.

        ```sh
        true
        ```

        ```python
        never closed
        """)
    assert problems[0].startswith("docs/x.md:1: a fence without a language")
    assert problems[1].startswith("docs/x.md:7: 'Not run by the docs test' needs a reason")
    assert problems[2] == "docs/x.md:11: this fence is never closed"


def test_hosts_ports_and_files_are_rewritten(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    text = ("phone-sim tls-check pbx.example.com:5061 --servername pbx.example.com "
            "--ca myroot.pem\n"
            "phone-sim tls-check 10.0.0.5 --crl issuing-ca.crl\n"
            "phone-sim register --server 127.0.0.1:5061 --ca /tmp/phone-sim-lab-XXXX/ca.pem\n"
            'SipHost(server="pbx.example.com"); TrustStore.from_files(["ca.pem"])\n'
            'open_tls_connection(host, 5061, server_name="pbx.example.com")\n'
            "tls-check pbx:5061 192.0.2.10:5061\n"
            "boot --config-url 'sip:proxy@pbx:5061;transport=tls' sip:proxy@pbx.example.com\n"
            "--config-url https://pbx.example.com:8089/digium_phones/ http://pbx.example.com\n")
    assert rewrite_hosts(text, lab).splitlines() == [
        f"phone-sim tls-check 127.9.8.7:5061 --servername pbx.example.com --ca {lab.ca_file}",
        f"phone-sim tls-check 127.9.8.7 --crl {lab.crl_file}",
        f"phone-sim register --server 127.9.8.7:5061 --ca {lab.ca_file}",
        f'SipHost(server="127.9.8.7"); TrustStore.from_files(["{lab.ca_file}"])',
        'open_tls_connection(host, 5061, server_name="pbx.example.com")',
        "tls-check 127.9.8.7:5061 127.9.8.7:5061",
        "boot --config-url 'sip:proxy@127.9.8.7:5061;transport=tls' sip:proxy@127.9.8.7",
        "--config-url https://127.9.8.7:8089/digium_phones/ http://127.9.8.7",
    ]
    untouched = ("--server 127.0.0.1:40123 --servername pbx.test --ca /certs/ca.pem "
                 "sip:101@pbx.phone-sim.test sip:101@pbx.example.com mypbx:5061 10.0.0.50 "
                 "192.0.2.100 127.0.0.1:50601"
                 '\npbx=$!\nkill "$pbx"; wait $pbx; echo pbx ready; pbx.json')
    assert rewrite_hosts(untouched, lab) == untouched


def test_a_boot_that_discovers_is_pointed_at_the_docs_lab_dpma() -> None:
    block = textwrap.dedent("""\
        phone-sim boot --mac 00:0f:d3:01:02:03 --model D65 --once  # over mDNS
        phone-sim boot --mac 00:0f:d3:01:02:03 \\
            --once
        phone-sim boot --mac 00:0f:d3:01:02:03 --config-url=sip:proxy@pbx:5061 --once
        phone-sim boot --mac 00:0f:d3:01:02:03 --server Other --once
        """)
    assert wrap_shell(block, dpma_server="docs 1").splitlines() == [
        "phone-sim boot --mac 00:0f:d3:01:02:03 --model D65 --once --server 'docs 1'"
        "  # over mDNS",
        "phone-sim boot --mac 00:0f:d3:01:02:03 \\",
        "    --once --server 'docs 1'",
        "phone-sim boot --mac 00:0f:d3:01:02:03 --config-url=sip:proxy@pbx:5061 --once",
        "phone-sim boot --mac 00:0f:d3:01:02:03 --server Other --once",
    ]
    assert wrap_shell(block) == block  # a docs lab without DPMA


def test_commands_that_run_until_ctrl_c_are_wrapped() -> None:
    block = textwrap.dedent("""\
        phone-sim lab                       # prints its CA file
        phone-sim lab --json --quiet --tls-port 0 > lab.json &
        phone-sim lab --duration 2
        phone-sim register $phone --once
        phone-sim register $phone
          phone-sim answer --echo \\
            --count 1
        PHONE_SIM_PASSWORD=1234 phone-sim answer $phone
        phone-sim tls-check pbx:5061 --json | head -1
        phone-sim tls-check pbx:5061
        cat > t.sh <<'EOF'
        phone-sim answer --echo
        EOF
        """)
    assert wrap_shell(block).splitlines() == [
        "__docs_long phone-sim lab --tls-port 0 --tcp-port 0 --udp-port 0"
        "                       # prints its CA file",
        "phone-sim lab --json --quiet --tls-port 0 > lab.json &",
        "phone-sim lab --duration 2",
        "phone-sim register $phone --once",
        "__docs_long phone-sim register $phone",
        "  __docs_long phone-sim answer --echo \\",
        "    --count 1",
        "__docs_long env PHONE_SIM_PASSWORD=1234 phone-sim answer $phone",
        "phone-sim tls-check pbx:5061 --json | head -1",
        "__docs_verdict phone-sim tls-check pbx:5061",
        "cat > t.sh <<'EOF'",
        "phone-sim answer --echo",
        "EOF",
    ]


def _run(tmp_path: Path, markdown: str) -> tuple[Block, str, int | None, int | None]:
    blocks, problems = _doc(tmp_path, markdown)
    assert problems == []
    outcome = run_block(blocks[0], workdir=make_scratch(ROOT, tmp_path / "work"),
                        lab=_lab(tmp_path), timeout=60)
    return blocks[0], outcome.report(), outcome.status, outcome.failed_at


def test_a_failing_shell_command_is_named_by_its_line(tmp_path: Path) -> None:
    _, report, status, failed_at = _run(tmp_path, """\
        Intro.

        ```sh
        echo first
        if false; then echo never; fi
        ls no-such-file-here
        echo never printed
        ```
        """)
    assert status == 2 and failed_at == 6
    assert report.startswith("docs/x.md:3: sh block failed (exit 2)\n"
                             "docs/x.md:6: ls no-such-file-here\n--- output ---\nfirst\n")
    assert "no-such-file-here" in report.split("--- output ---")[1]
    assert "never printed" not in report and "__DOCS_FAILED__" not in report


def test_a_failing_python_statement_is_named_by_its_line(tmp_path: Path) -> None:
    _, report, status, failed_at = _run(tmp_path, """\
        ```python
        import json

        def f() -> None:
            json.loads("{")

        f()
        ```
        """)
    assert status == 1 and failed_at == 5
    assert 'docs/x.md:5: json.loads("{")' in report and "JSONDecodeError" in report


def test_a_block_runs_in_a_scratch_copy_of_the_checkout(tmp_path: Path) -> None:
    _, report, status, _ = _run(tmp_path, """\
        ```sh
        test -f scripts/bootstrap && test -f docs/writing-docs.md
        echo written > new-file
        command -v phone-sim python
        ```
        """)
    assert status == 0, report
    assert (tmp_path / "work" / "new-file").is_file() and not (ROOT / "new-file").exists()
    assert f"{Path(sys.executable).parent}/phone-sim" in report


def test_long_running_commands_are_started_checked_and_stopped(tmp_path: Path) -> None:
    serve = (f"{sys.executable} -c \"import signal, sys, time; "
             "signal.signal(signal.SIGINT, lambda *a: sys.exit({code})); "
             "print('ready', flush=True); time.sleep(60)\"")
    _, report, status, _ = _run(tmp_path, f"""\
        ```sh
        __docs_long {serve.format(code=0)}
        echo after
        ```
        """)
    assert status == 0 and "ready\nafter" in report, report
    _, report, status, failed_at = _run(tmp_path, f"""\
        ```sh
        __docs_long {serve.format(code=3)}
        ```
        """)
    assert status != 0 and failed_at == 2
    assert "exited 3 when stopped with SIGINT (Ctrl-C)" in report
    _, report, status, _ = _run(tmp_path, """\
        ```sh
        __docs_long sh -c 'echo bye; exit 4'
        ```
        """)
    assert status != 0 and "ended by itself (exit 4) instead of running until stopped" in report


def test_a_verdict_passes_with_1_and_fails_with_2(tmp_path: Path) -> None:
    _, report, status, _ = _run(tmp_path, """\
        ```sh
        __docs_verdict sh -c 'exit 1'
        echo went on
        ```
        """)
    assert status == 0 and "went on" in report
    _, report, status, failed_at = _run(tmp_path, """\
        ```sh
        __docs_verdict sh -c 'exit 2'
        ```
        """)
    assert status == 2 and failed_at == 2


def test_blocks_not_run_are_still_checked(tmp_path: Path) -> None:
    blocks, _ = _doc(tmp_path, """\
        Not run by the docs test: needs root.

        ```sh
        sudo ./scripts/no-such-script
        sudo ./scripts/test -m "not peer"
        phone-sim tls-check pbx:5061 --no-such-option
        phone-sim register --server pbx --user 101 --password x --once
        ```

        Not run by the docs test: an outline.

        ```python
        from phone_sim.lab import Lab, NoSuchName
        lab.method() -> bool
        ```
        """)
    problems = check_not_run(blocks[0], ROOT)
    assert problems[0] == "docs/x.md:4: scripts/no-such-script does not exist"
    assert problems[1].startswith("docs/x.md:6: phone-sim tls-check pbx:5061 --no-such-option:")
    assert "unrecognized arguments: --no-such-option" in problems[1]
    assert len(problems) == 2
    (problem,) = check_not_run(blocks[1], ROOT)
    assert problem.startswith("docs/x.md:12: its imports fail: ImportError: cannot import name "
                              "'NoSuchName'")


def test_a_synopsis_names_only_real_options(tmp_path: Path) -> None:
    blocks, _ = _doc(tmp_path, """\
        ```text
        phone-sim register --server HOST[:PORT] [--once]
            [--no-such-option] [--json]
        phone-sim lab: registrar for lab.phone-sim.test   (output, not a synopsis)
        phone-sim no-such-command [--x]
        ```
        """)
    assert check_synopsis(blocks[0]) == [
        "docs/x.md:2: phone-sim register has no option --no-such-option",
        "docs/x.md:5: phone-sim has no command 'no-such-command'",
    ]


@pytest.mark.parametrize("reason", ["", "   ", "x."])
def test_a_reason_needs_words(tmp_path: Path, reason: str) -> None:
    _, problems = _doc(tmp_path, f"Not run by the docs test:{reason}\n\n```sh\ntrue\n```\n")
    assert len(problems) == 1 and "needs a reason" in problems[0]
