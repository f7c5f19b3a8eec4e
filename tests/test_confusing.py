"""confusing-classes: the head/tail split, the ranking, the table artifact and the command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ltkit.cli import app
from ltkit.confusing import (
    ConfusingConfig,
    build_table,
    load_table,
    make_table,
    mean_softmax,
    rank_confusing,
    split_head_tail,
    table_store_path,
)
from ltkit.errors import ArtifactError, ConfigError
from ltkit.store import open_store
from storefixtures import DEFAULT_COUNTS, make_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("conf") / "features.h5")


def run_cli(*args: str, stdin: str | None = None):
    return CliRunner().invoke(app, list(args), input=stdin)


def test_head_is_the_fewest_largest_classes_reaching_the_ratio():
    counts = np.array([20, 50, 30])  # sorted: 1 (50), 2 (30), 0 (20)
    head, tail = split_head_tail(counts, 0.8)  # 80/100 reaches 0.8 exactly: two classes
    assert head.tolist() == [1, 2] and tail.tolist() == [0]
    head, tail = split_head_tail(counts, 0.49)
    assert head.tolist() == [1] and tail.tolist() == [2, 0]
    head, tail = split_head_tail(np.array([10, 30, 30, 5]), 0.4)  # 30/75: tie broken by index
    assert head.tolist() == [1] and tail.tolist() == [2, 0, 3]
    head, tail = split_head_tail(np.array([10, 30, 30, 5]), 0.6)
    assert head.tolist() == [1, 2] and tail.tolist() == [0, 3]


def test_a_ratio_that_leaves_no_tail_is_refused():
    with pytest.raises(ConfigError, match="every class in the head"):
        split_head_tail(np.array([50, 30, 20]), 0.81)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match="head-ratio"):
            ConfusingConfig(head_ratio=bad).validate()


def test_ranking_skips_the_class_itself_and_breaks_ties_by_index():
    scores = np.array([[0.1, 0.3, 0.3, 0.2, 0.1],    # tail class 3: ties 1/2 -> 1 first
                       [0.4, 0.05, 0.05, 0.2, 0.3]])  # tail class 4: itself (0.3) is skipped
    counts = np.array([5, 5, 5, 2, 1])
    conf, vals = rank_confusing(scores, np.array([3, 4]), counts, 3)
    assert conf.tolist() == [[1, 2, 0], [0, 3, 1]]
    np.testing.assert_allclose(vals, [[0.3, 0.3, 0.1], [0.4, 0.2, 0.05]], rtol=1e-6)
    conf, _ = rank_confusing(scores, np.array([3, 4]), np.array([5, 0, 5, 2, 1]), 2)
    assert 1 not in conf.tolist()[0] + conf.tolist()[1]  # a class with no image is never drawn
    with pytest.raises(ConfigError, match="--top 5"):
        rank_confusing(scores, np.array([3, 4]), counts, 5)


def test_mean_softmax_and_table_match_a_direct_computation(store_path):
    with open_store(store_path) as st:
        logits, labels = st.read("train", "logits"), st.read("train", "labels")
        table = make_table(st, ConfusingConfig(head_ratio=0.9, top=3))
        means = mean_softmax(st, np.array([3, 5]))
    probs = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    np.testing.assert_allclose(means, [probs[labels == 3].mean(0), probs[labels == 5].mean(0)], rtol=1e-9)
    counts = np.array(DEFAULT_COUNTS)
    head, tail = split_head_tail(counts, 0.9)
    assert table["head_classes"].tolist() == head.tolist() and table["tail_classes"].tolist() == tail.tolist()
    for i, c in enumerate(tail):
        expect = probs[labels == c].mean(0)
        expect[c] = -1
        order = np.argsort(-expect, kind="stable")[:3]
        assert table["confusing"][i].tolist() == order.tolist()
        np.testing.assert_allclose(table["scores"][i].numpy(), expect[order], rtol=1e-5)
    assert table["head_fraction"] == pytest.approx(counts[head].sum() / counts.sum())


def test_table_artifact_lineage_and_csv(store_path, tmp_path):
    out = build_table(store_path, ConfusingConfig(head_ratio=0.8, top=2), out=tmp_path / "t.pt",
                      csv_path=tmp_path / "t.csv")
    table = load_table(out)
    assert table["format"] == "ltkit-confusing-table" and table["top"] == 2
    assert table["confusing"].shape == (len(table["tail_classes"]), 2)
    assert table["confusing"].dtype == torch.int64 and table["scores"].dtype == torch.float32
    assert table["class_names"] == [f"class{k}" for k in range(6)]
    assert table["lineage"]["options"] == {"head_ratio": 0.8, "top": 2}
    assert table_store_path(table) == store_path.resolve()
    with open(tmp_path / "t.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * len(table["tail_classes"])
    first = rows[0]
    tail0 = int(table["tail_classes"][0])
    assert first["tail_name"] == f"class{tail0}" and first["rank"] == "1"
    assert int(first["confusing_class"]) == int(table["confusing"][0, 0])
    assert float(first["score"]) == pytest.approx(float(table["scores"][0, 0]))


def test_a_changed_store_is_refused(tmp_path):
    store = make_store(tmp_path / "s.h5")
    table = load_table(build_table(store, ConfusingConfig()))
    with open(store, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="changed"):
        table_store_path(table)


def test_cli_prints_only_the_path_and_shows_the_table(store_path, tmp_path):
    out = tmp_path / "cli.table.pt"
    result = run_cli("confusing-classes", "-", "--out", str(out), "--csv", str(tmp_path / "c.csv"),
                     stdin=f"{store_path}\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "confusing classes" in result.stderr and "class5" in result.stderr
    assert (tmp_path / "c.csv").exists()
    again = run_cli("confusing-classes", str(store_path), "--top", "2", "--out", str(out))
    assert again.exit_code == 2 and "--force" in again.stderr and again.stdout == ""


def test_a_reused_table_never_replaces_another_csv_without_force(store_path, tmp_path):
    out, csv_file = tmp_path / "t.pt", tmp_path / "c.csv"
    args = ("confusing-classes", str(store_path), "--out", str(out), "--csv", str(csv_file))
    assert run_cli(*args).exit_code == 0
    written = csv_file.read_text()
    assert run_cli(*args).exit_code == 0 and csv_file.read_text() == written  # same export: fine
    csv_file.write_text("someone else's file\n")
    refused = run_cli(*args)
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert csv_file.read_text() == "someone else's file\n"
    forced = run_cli(*args, "--force")  # --force replaces only an earlier export (issue 19)
    assert forced.exit_code == 2 and "not an earlier table CSV export" in forced.stderr
    assert csv_file.read_text() == "someone else's file\n"
    csv_file.write_text(written.splitlines()[0] + "\n")  # an earlier export (its header): replaced
    assert run_cli(*args, "--force").exit_code == 0 and csv_file.read_text() == written


def test_cli_default_path_and_bad_ratio(tmp_path):
    store = make_store(tmp_path / "feat.h5")
    result = run_cli("confusing-classes", str(store), "--quiet")
    assert result.exit_code == 0 and result.stdout.strip() == str(tmp_path / "feat.table.pt")
    bad = run_cli("confusing-classes", str(store), "--head-ratio", "0.999", "--force")
    assert bad.exit_code == 2 and "every class in the head" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_cli_json_prints_the_table_itself(store_path, tmp_path):
    out = tmp_path / "j.table.pt"
    result = run_cli("confusing-classes", str(store_path), "--out", str(out), "--json", "-q")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    table = load_table(out)
    assert data["path"] == str(out) and data["head_ratio"] == table.head_ratio
    assert [t["class"] for t in data["tail"]] == [table.class_names[c] for c in table.tail_classes.tolist()]
    first = data["tail"][0]["confusing"]
    assert [c["class"] for c in first] == [table.class_names[u] for u in table.confusing[0].tolist()]
    assert first[0]["score"] == pytest.approx(float(table.scores[0, 0]))
