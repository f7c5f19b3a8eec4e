"""`ltkit compare`: rows, best marks, deltas, formats."""

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from ltkit.cli import app
from ltkit.compare import best_values, compare_rows, flat_options, render
from ltkit.errors import ConfigError
from storefixtures import make_store


def fake_result(name, top1, many, medium, few, balanced, *, tail=None, options=None, tau=None,
                method="fsa", store="/s.h5"):
    split = lambda acc: {"accuracy": acc, "classes": 0 if acc is None else 2, "samples": 10}
    return {"format": "ltkit-evaluation", "source": {"path": f"/runs/{name}", "kind": "classifier"},
            "store": {"path": store}, "on": "test", "thresholds": {"many": 100, "few": 20},
            "method": method, "options": options or {}, "tau": tau, "top1": top1,
            "balanced_accuracy": balanced,
            "splits": {"many": split(many), "medium": split(medium), "few": split(few)},
            "fsa": None if tail is None else {"head": split(0.9), "tail": split(tail)}}


RUNS = [fake_result("a.pt", 0.50, 0.90, 0.40, None, 0.55, options={"lr": 0.001, "na": 3}),
        fake_result("b.pt", 0.60, 0.80, 0.50, None, 0.65, tail=0.3,
                    options={"lr": 0.01, "na": 3, "tau_s": 0.7}),
        fake_result("c.pt", 0.55, 0.90, 0.45, None, 0.60, method="crt",
                    tau={"value": 0.9, "mode": "auto"})]


def test_rows_values_and_differing_options():
    rows = compare_rows(RUNS)
    assert [r.run for r in rows] == ["a.pt", "b.pt", "c.pt"]
    assert rows[0].options == "lr=0.001"  # na is the same everywhere: not shown
    assert rows[1].options == "lr=0.01, tau_s=0.7"
    assert rows[2].options == "tau=0.9 (auto)" and rows[2].method == "crt"
    assert rows[1].values == {"overall": 0.6, "many": 0.8, "medium": 0.5, "few": None,
                              "tail": 0.3, "balanced": 0.65, "clf_gap": None, "gap": None}


def test_best_per_column_ties_and_empty():
    best = best_values(compare_rows(RUNS))
    assert best == {"overall": 0.6, "many": 0.9, "medium": 0.5, "few": None, "tail": 0.3,
                    "balanced": 0.65}
    assert best_values(compare_rows(RUNS[:1]))["overall"] is None  # one run: nothing to mark


def test_table_marks_best_and_deltas():
    text = render(compare_rows(RUNS), "table")
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert "50.00" in lines["a.pt"] and "(+" not in lines["a.pt"]  # the first run: no delta
    assert "60.00 (+10.00) *" in lines["b.pt"]
    assert "90.00 *" in lines["a.pt"] and "90.00 (+0.00) *" in lines["c.pt"]  # a tie: both marked
    assert "55.00 (+5.00)" in lines["c.pt"] and "55.00 (+5.00) *" not in lines["c.pt"]
    assert "—" in lines["a.pt"]  # the empty few split


def test_markdown():
    text = render(compare_rows(RUNS), "markdown").splitlines()
    assert text[0] == ("| run | method | options | overall % | many % | medium % | few % | "
                       "tail % | balanced % |")
    assert "| b.pt | fsa | lr=0.01, tau_s=0.7 | **60.00 (+10.00)** | 80.00 (-10.00) |" in text[3]


def test_csv():
    rows = list(csv.DictReader(io.StringIO(render(compare_rows(RUNS), "csv"))))
    assert rows[1]["overall_pct"] == "60.0000" and rows[1]["overall_delta_pct"] == "10.0000"
    assert rows[0]["few_pct"] == "" and rows[1]["tail_delta_pct"] == ""
    assert rows[1]["best"] == "overall;medium;tail;balanced"
    assert rows[0]["best"] == "many" and rows[2]["best"] == "many"
    with pytest.raises(ConfigError, match="format"):
        render(compare_rows(RUNS), "html")


def test_duplicate_names_are_numbered():
    rows = compare_rows([RUNS[0], RUNS[0], RUNS[1]])
    assert [r.run for r in rows] == ["a.pt #1", "a.pt #2", "b.pt"]


def test_flat_options_nested():
    r = fake_result("x", 0.5, 0.5, 0.5, 0.5, 0.5, options={"aug": {"tau_s": 0.7, "na": 3},
                                                             "classes": [1, 2]})
    assert flat_options(r) == {"aug.tau_s": "0.7", "aug.na": "3", "classes": "1,2"}
    r["options"] |= {"device": "cuda", "val_acc": 0.8, "classes": []}
    assert flat_options(r) == {"aug.tau_s": "0.7", "aug.na": "3", "classes": ""}


def test_options_compared_within_a_method():
    runs = [fake_result("a", 0.5, 0.5, 0.5, 0.5, 0.5, options={"lr": 0.1}),
            fake_result("b", 0.5, 0.5, 0.5, 0.5, 0.5, method="crt", options={"lr": 0.2})]
    assert [r.options for r in compare_rows(runs)] == ["", ""]  # the method column tells them apart


def test_cli_compare_jsons_and_a_store(tmp_path):
    store = make_store(tmp_path / "features.h5")
    runner = CliRunner()
    paths = []
    for name, tau in (("plain", []), ("tau", ["--tau", "0.5"])):
        res = runner.invoke(app, ["evaluate", str(store), "-q", "--device", "cpu", *tau])
        assert res.exit_code == 0
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(res.stdout)
    res = runner.invoke(app, ["compare", *map(str, paths), str(store), "--device", "cpu"])
    assert res.exit_code == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if "│" in line]
    assert len(rows) == 3  # one per run (the header uses heavy lines)
    assert "plain" in rows[0] and "tau=0.5" in rows[1] and "features.h5" in rows[2]
    plain = json.loads(paths[0].read_text())
    assert f"{100 * plain['top1']:.2f}" in rows[0]
    res = runner.invoke(app, ["compare", *map(str, paths), "--format", "csv"])
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["run"] for r in table] == ["plain", "tau"]
    assert float(table[0]["overall_pct"]) == pytest.approx(100 * plain["top1"], abs=1e-4)


def test_cli_compare_warns_on_different_stores(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(RUNS[0]))
    b.write_text(json.dumps(fake_result("d.pt", 0.5, 0.5, 0.5, 0.5, 0.5, store="/other.h5")))
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--format", "markdown"])
    assert res.exit_code == 0 and "not directly comparable" in res.stderr
    assert res.stdout.count("\n") == 4


def test_cli_compare_refuses_foreign_json(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    res = CliRunner().invoke(app, ["compare", str(bad)])
    assert res.exit_code == 2 and "not an ltkit evaluation" in res.stderr and res.stdout == ""


def test_json_format_has_the_table_values():
    out = json.loads(render(compare_rows(RUNS), "json"))
    assert out["columns"] == ["overall", "many", "medium", "few", "tail", "balanced"]
    b = out["runs"][1]
    assert b["run"] == "b.pt" and b["accuracy"]["overall"] == 0.60 and b["accuracy"]["few"] is None
    assert b["delta"]["overall"] == pytest.approx(0.10) and b["delta"]["tail"] is None
    assert b["best"] == ["overall", "medium", "tail", "balanced"]


def test_cli_format_json_and_json_are_one_output(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(RUNS[0]))
    runner = CliRunner()
    by_format = runner.invoke(app, ["compare", str(path), "--format", "json"])
    by_flag = runner.invoke(app, ["compare", str(path), "--json"])
    assert by_format.exit_code == by_flag.exit_code == 0, by_format.stderr
    assert json.loads(by_format.stdout) == json.loads(by_flag.stdout)
    assert json.loads(by_flag.stdout)["runs"][0]["run"] == "a"
    clash = runner.invoke(app, ["compare", str(path), "--json", "--format", "csv"])
    assert clash.exit_code == 2 and clash.stderr.startswith("error: --json prints JSON")
