"""Asterisk configuration syntax, as main/config.c reads it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phone_sim.provisioning.asterisk_conf import (
    MAX_INCLUDE_DEPTH,
    ConfError,
    parse_asterisk_conf,
    read_asterisk_conf,
)


def test_sections_options_and_comments() -> None:
    conf = parse_asterisk_conf(
        "; a comment\n"
        "[general]\n"
        "globalpin = 1234   ; trailing comment\n"
        "label=semi\\;colon\n"
        "context => phones\n"
        "\\;odd=1\n"
        ";-- a block\n"
        "hidden=1\n"
        "--; after=1\n"
        "line=101\n"
        "line=102\n"
        "line+=b\n"
        "ext = 1;--inline--;2\n",
        file="x.conf",
    )
    (general,) = conf.sections
    assert general.value("GLOBALPIN") == "1234"
    assert general.value("label") == "semi;colon"
    assert general.value("context") == "phones"
    assert general.value(";odd") == "1"
    assert general.get("hidden") is None
    assert general.value("after") == "1"
    assert [o.value for o in general.get_all("line")] == ["101", "102b"]
    assert general.value("ext") == "12"
    assert general.get("line") is not None and general.get_all("line")[0].line == 10


def test_templates_inheritance_and_additions() -> None:
    conf = parse_asterisk_conf(
        "[base](!)\ntype=line\nmedia_encryption=sdes\n"
        "[other]\ncolour=red\n"
        "[101](base,other)\nline_label=Bob\nmedia_encryption=no\n"
        "[other](+)\nsize=big\n",
        file="t.conf",
    )
    assert [s.name for s in conf.sections] == ["other", "101"]
    assert [s.name for s in conf.all_sections] == ["base", "other", "101"]
    line = conf.named("101")[0]
    assert line.templates == ("base", "other")
    assert line.value("type") == "line" and line.value("colour") == "red"
    # inherited first, own after: the last value wins for a single-valued option
    assert line.value("media_encryption") == "no"
    assert [o.inherited for o in line.get_all("media_encryption")] == [True, False]
    assert conf.named("other")[0].value("size") == "big"


def test_duplicate_names_are_kept_for_the_module() -> None:
    conf = parse_asterisk_conf("[101]\ntype=endpoint\n[101]\ntype=aor\n")
    assert [s.value("type") for s in conf.named("101")] == ["endpoint", "aor"]


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("key=1\n", "outside any [section]", 1),
        ("[a\nk=1\n", "no closing ']'", 1),
        ("[]\n", "empty section name", 1),
        ("[a]\njunk\n", "no '='", 2),
        ("[a]\n=1\n", "no option name", 2),
        ("[a](b)\n", "inherits from 'b'", 1),
        ("[a](+)\n", "adds to a section", 1),
        ("[a] x\n", "unexpected", 1),
        ("[a]\n#exec /bin/echo [x]\n", "#exec /bin/echo [x] is refused", 2),
        ("[a]\n#frobnicate x\n", "unknown directive #frobnicate", 2),
        ("[a]\n#include\n", "needs a file name", 2),
        ("[a]\n;-- never closed\nk=1\n", "never closed", 2),
        ("[a]\n\\ x=1\n", "invalid escape", 2),
    ],
)
def test_errors_name_the_file_and_line(text: str, message: str, line: int) -> None:
    with pytest.raises(ConfError, match=re.escape(message)) as info:
        parse_asterisk_conf(text, file="res_digium_phone.conf")
    assert info.value.file == "res_digium_phone.conf" and info.value.line == line
    assert str(info.value).startswith(f"res_digium_phone.conf:{line}:")


def test_include_is_relative_to_the_including_file(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "main.conf").write_text("[general]\na=1\n#include sub/one.conf\nz=9\n")
    (sub / "one.conf").write_text('b=2\n#include "two.conf"\n[other]\nc=3\n')
    (sub / "two.conf").write_text("[more]\nd=4\n#tryinclude missing.conf\n")
    (sub / "p1.conf").write_text("[p1]\ne=5\n")
    (sub / "p2.conf").write_text("[p2]\ne=6\n")
    (tmp_path / "glob.conf").write_text("#include <sub/p*.conf>\n")
    conf = read_asterisk_conf(tmp_path / "main.conf")
    general = conf.named("general")[0]
    assert general.value("a") == "1" and general.value("b") == "2"
    # an included file starts in the includer's section; the includer then goes on in its
    # own section, whatever the included file defined (config.c keeps one per file)
    assert general.value("z") == "9" and conf.named("other")[0].value("c") == "3"
    more = conf.named("more")[0].get("d")
    assert more is not None and more.file == str(sub / "two.conf") and more.line == 2
    assert [s.name for s in read_asterisk_conf(tmp_path / "glob.conf").sections] == ["p1", "p2"]


def test_include_errors(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("[x]\n#include nothere.conf\n")
    with pytest.raises(ConfError, match=r"nothere\.conf does not exist") as info:
        read_asterisk_conf(tmp_path / "a.conf")
    assert info.value.line == 2
    (tmp_path / "loop.conf").write_text("[x]\n#include loop.conf\n")
    with pytest.raises(ConfError, match=f"more than {MAX_INCLUDE_DEPTH} deep"):
        read_asterisk_conf(tmp_path / "loop.conf")
    with pytest.raises(ConfError, match="cannot read"):
        read_asterisk_conf(tmp_path / "absent.conf")
    (tmp_path / "bin.conf").write_bytes(b"[x]\nk=\xff\n")
    with pytest.raises(ConfError, match="not UTF-8"):
        read_asterisk_conf(tmp_path / "bin.conf")
    with pytest.raises(ConfError, match="no include loader"):
        parse_asterisk_conf("#include x.conf\n")


@given(st.text(max_size=300))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        parse_asterisk_conf(text, file="f.conf")
    except ConfError as exc:
        assert str(exc).startswith("f.conf")
