"""The man page documents every option the parser has, with the same choices."""

from __future__ import annotations

import argparse
import itertools
import re

import pytest

from ecarchive.cli import build_parser
from tests.cli.conftest import REPO

MAN = (REPO / "man" / "ecarchive.1").read_text()


def _plain(roff: str) -> str:
    """The words of the roff source: escapes and font macros dropped."""
    text = roff.replace("\\-", "-").replace("\\e", "\\")
    text = re.sub(r"\\f[BIRP]", "", text)
    text = re.sub(r"^\.(?:B|I|BR|RB|BI|IR|RI|IB)\s", "", text, flags=re.M)
    return re.sub(r"[ \t]+", " ", text.replace('"', ""))


def _section(name: str) -> str:
    match = re.search(rf"^\.SH {name}\n(.*?)(?=^\.SH )", MAN, flags=re.M | re.S)
    assert match, name
    return match.group(1)


def _synopsis_choices() -> dict[str, list[str]]:
    """`.RB [ \\-\\-opt` followed by `.BR a | b ]` lines of the SYNOPSIS."""
    lines = _section("SYNOPSIS").splitlines()
    found = {}
    for first, second in itertools.pairwise(lines):
        opt = re.fullmatch(r"\.RB \[ ((?:\\-)+[\w\\-]+)", first)
        if opt and second.startswith(".BR "):
            values = second[4:].replace("]", "").split("|")
            found[opt.group(1).replace("\\-", "-")] = [v.strip() for v in values]
    return found


def _verbs() -> dict[str, argparse.ArgumentParser]:
    return build_parser()[1]


@pytest.mark.parametrize("verb", sorted(_verbs()))
def test_every_option_is_in_the_man_page(verb: str) -> None:
    plain = _plain(MAN)
    assert f"ecarchive {verb}" in _plain(_section("SYNOPSIS"))
    for action in _verbs()[verb]._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", plain), (verb, option)
            if action.choices and option.startswith("--"):
                # the OPTIONS entry lists the same choices, e.g. "--key-bytes 16|24|32"
                shown = "|".join(str(c) for c in action.choices)
                assert f"{option} {shown}" in plain, (verb, option, shown)


def test_synopsis_choices_match_the_parser() -> None:
    synopsis = _synopsis_choices()
    assert set(synopsis) >= {"--format", "--key-bytes", "--fnek"}
    create = _verbs()["create"]
    by_option = {o: a for a in create._actions for o in a.option_strings}
    for option, values in synopsis.items():
        assert values == [str(c) for c in by_option[option].choices or ()], option
