"""The README's command reference is generated from --help; stale means failing."""

from pathlib import Path

from ltkit.cli.reference import END, START, render

README = Path(__file__).parents[1] / "README.md"


def test_command_reference_is_current():
    text = README.read_text()
    section = text[text.index(START): text.index(END) + len(END)]
    assert section == render(), "README command reference is stale: run python -m ltkit.cli.reference"


def test_readme_first_screen_has_the_two_setup_commands():
    first = "\n".join(README.read_text().splitlines()[:40])
    assert "make demo" in first and "make test" in first
