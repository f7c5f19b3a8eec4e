"""Running the real `ltkit` entry point (`ltkit.cli.main`) in process, as a shell would."""

from __future__ import annotations

import sys

import pytest


def run_main(argv: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `ltkit ARGV` through `ltkit.cli.main`."""
    from ltkit.cli import main

    monkeypatch.setattr(sys, "argv", ["ltkit", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err
