"""`--config FILE.toml` and `--print-config` through the real entry point (`ltkit.cli.main`)."""

from __future__ import annotations

import json

import pytest

from entrypoint import run_main
from storefixtures import make_store


def test_a_config_table_sets_options_and_the_command_line_wins(tmp_path, capsys, monkeypatch):
    store = make_store(tmp_path / "s.h5")
    config = tmp_path / "run.toml"
    config.write_text('[evaluate]\nece-bins = 7\nsplit = "val"\n[train-backbone]\nbatch-size = 64\n')
    code, out, err = run_main(["evaluate", str(store), "--config", str(config), "--quiet"], capsys, monkeypatch)
    assert code == 0, err
    result = json.loads(out)
    assert result["on"] == "val" and result["calibration"]["bins"] == 7
    code, out, err = run_main(["evaluate", str(store), "--config", str(config), "--split", "test", "--quiet"],
                           capsys, monkeypatch)
    assert code == 0 and json.loads(out)["on"] == "test"  # the command line wins


def test_print_config_replays_exactly(tmp_path, capsys, monkeypatch):
    config = tmp_path / "run.toml"
    config.write_text('[train-backbone]\nbatch-size = 64\nno-amp = true\nepochs = 3\n')
    code, out, _ = run_main(["train-backbone", "--config", str(config), "--print-config", "--seed", "5"],
                         capsys, monkeypatch)
    assert code == 0 and out.startswith("[train-backbone]\n")
    assert "batch-size = 64" in out and "amp = false" in out and "seed = 5" in out and "epochs = 3" in out
    assert "force" not in out and "quiet" not in out
    replay = tmp_path / "replay.toml"
    replay.write_text(out)
    code, again, _ = run_main(["train-backbone", "--config", str(replay), "--print-config"], capsys, monkeypatch)
    assert code == 0 and again == out  # the printed table gives the same options back


@pytest.mark.parametrize("text, needle", [
    ('[evaluate]\nbogus = 1\n', "unknown option(s) bogus; evaluate takes:"),
    ('[evaluate\n', "is not valid TOML"),
    ('evaluate = 3\n', "[evaluate] must be a table"),
    ('[evaluate]\nece-bins = "many"\n', "--ece-bins"),
])
def test_bad_config_files_are_one_line(tmp_path, capsys, monkeypatch, text, needle):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    code, out, err = run_main(["evaluate", "x.h5", "--config", str(config)], capsys, monkeypatch)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: ") and needle in err, err


def test_a_missing_config_file(capsys, monkeypatch):
    code, _, err = run_main(["evaluate", "x.h5", "--config", "/nowhere.toml"], capsys, monkeypatch)
    assert code == 2 and "no such file" in err
