"""`ltkit evaluate`, its report and plots, and `ltkit plot-features`."""

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ltkit.artifacts import make_lineage
from ltkit.classifiers import Classifier, save_classifier
from ltkit.cli import app
from ltkit.errors import ArtifactError, ConfigError, DataError
from ltkit.evaluate import EvalConfig, evaluate
from ltkit.feature_plots import FeaturePlotConfig, pca_2d, pick_classes
from ltkit.metrics import balanced_accuracy, measure, per_class_accuracy
from ltkit.store import open_store
from storefixtures import make_store

PNG = b"\x89PNG\r\n\x1a\n"
BOUNDARY_COUNTS = (101, 100, 20, 19, 5, 2)  # many | medium (both ends) | few


def strict_json(text):
    def refuse(name):
        raise ValueError(f"{name} in JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("s") / "features.h5")


@pytest.fixture(scope="module")
def boundary_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("b") / "features.h5", counts=BOUNDARY_COUNTS)


def save_clf(path, store, clf, *, parents=None, method="test-method", options=None):
    lineage = make_lineage(parents or {"store": store}, {}, 0)
    return save_classifier(path, clf, method=method, lineage=lineage,
                           options=options or {"lr": 0.1})


def constant_clf(bias, channels=8):
    """Zero weight: every sample gets the logits `bias`."""
    return Classifier("linear", torch.zeros(len(bias), channels), torch.tensor(bias))


# ---- measure: every number against a hand-computed example --------------------------------

def test_measure_hand_example():
    labels = np.array([0, 0, 1, 1, 2, 3, 3, 4])
    preds = np.array([0, 1, 1, 1, 0, 3, 0, 4])
    base = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    logits = 10 * np.eye(6)[preds] + base  # (8, 6)
    counts = np.array([101, 100, 20, 19, 5, 0])
    names = [f"c{i}" for i in range(6)]
    m, cm = measure(logits, labels, counts, names, head_tail=(np.array([0, 1]), np.array([2, 3, 4, 5])))
    assert m["top1"] == pytest.approx(5 / 8)
    # top-5 sets: pred 0 -> {0,5,4,3,2}, pred 1 -> {1,5,4,3,2}: only (label 0, pred 1) misses
    assert m["top5"] == pytest.approx(7 / 8)
    # per class 1/2, 2/2, 0/1, 1/2, 1/1, no test image
    assert [r["accuracy"] for r in m["per_class"]] == [0.5, 1.0, 0.0, 0.5, 1.0, None]
    assert m["balanced_accuracy"] == pytest.approx(3.0 / 5)
    assert m["splits"]["many"] == {"accuracy": 0.5, "classes": 1, "samples": 2}       # 101
    assert m["splits"]["medium"] == {"accuracy": 0.5, "classes": 2, "samples": 3}     # 100, 20
    assert m["splits"]["few"] == {"accuracy": 0.75, "classes": 3, "samples": 3}       # 19, 5, 0
    assert m["fsa"]["head"] == {"accuracy": 0.75, "classes": 2, "samples": 4}
    assert m["fsa"]["tail"] == {"accuracy": pytest.approx(0.5), "classes": 4, "samples": 4}
    assert [r["split"] for r in m["per_class"]] == ["many", "medium", "medium", "few", "few", "few"]
    assert [r["fsa"] for r in m["per_class"]] == ["head", "head", "tail", "tail", "tail", "tail"]
    assert [r["test_count"] for r in m["per_class"]] == [2, 2, 1, 2, 1, 0]
    assert cm[0].tolist() == [1, 1, 0, 0, 0, 0] and cm[3].tolist() == [1, 0, 0, 1, 0, 0]
    assert cm.sum() == 8
    # ECE by an independent loop: 15 bins (b/15, (b+1)/15]
    bins = {}
    for lg, y in zip(logits, labels):
        e = [math.exp(v) for v in lg]
        conf = max(e) / sum(e)
        b = min(14, math.ceil(conf * 15) - 1)
        bins.setdefault(b, []).append((conf, float(int(np.argmax(lg)) == y)))
    ece = sum(len(v) / 8 * abs(sum(c for c, _ in v) / len(v) - sum(a for _, a in v) / len(v))
              for v in bins.values())
    assert m["calibration"]["ece"] == pytest.approx(ece)
    assert sum(m["calibration"]["count"]) == 8 and m["calibration"]["bins"] == 15


def test_measure_empty_split_is_null_in_json():
    m, _ = measure(np.eye(3)[[0, 1, 2]], np.array([0, 1, 1]), np.array([50, 50, 50]), list("abc"))
    assert m["splits"]["many"] == {"accuracy": None, "classes": 0, "samples": 0}
    assert m["splits"]["few"] == {"accuracy": None, "classes": 0, "samples": 0}
    assert m["top5"] is None and m["fsa"] is None  # K < 5; no table
    text = json.dumps(m, allow_nan=False)
    assert strict_json(text)["splits"]["many"]["accuracy"] is None


# ---- evaluate on a store ------------------------------------------------------------------

def test_store_phase1_matches_direct_computation(store):
    result = evaluate(store, EvalConfig(device="cpu")).result
    with open_store(store) as st:
        pooled, labels = st.read("test", "pooled"), st.read("test", "labels")
        head = st.classifier()
    preds = (pooled @ head["weight"].T + head["bias"]).argmax(1)
    per_class = per_class_accuracy(preds, labels, 6)
    assert result["top1"] == pytest.approx((preds == labels).mean())
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy(per_class))
    assert result["method"] == "phase1" and result["source"]["kind"] == "store"
    assert result["samples"] == 30 and result["num_classes"] == 6 and result["on"] == "test"
    assert result["tau"] is None and result["fsa"] is None and result["retrieval"] is None


def test_boundaries_through_a_classifier(boundary_store, tmp_path):
    # zero weight, bias -> every test image predicted as class 1 (100 training images: medium)
    bias = [2.0, 3.0, 1.5, 1.0, 0.5, 0.0]
    path = save_clf(tmp_path / "c.pt", boundary_store, constant_clf(bias))
    r = evaluate(path, EvalConfig(device="cpu")).result
    assert r["top1"] == pytest.approx(5 / 30)
    assert r["top5"] == pytest.approx(25 / 30)  # top-5 = classes 1,0,2,3,4: class 5 misses
    assert r["balanced_accuracy"] == pytest.approx(1 / 6)
    assert r["splits"]["many"] == {"accuracy": 0.0, "classes": 1, "samples": 5}
    assert r["splits"]["medium"] == {"accuracy": 0.5, "classes": 2, "samples": 10}  # 100 and 20
    assert r["splits"]["few"] == {"accuracy": 0.0, "classes": 3, "samples": 15}     # 19, 5, 2
    conf = math.exp(3.0) / sum(math.exp(b) for b in bias)
    assert r["calibration"]["ece"] == pytest.approx(abs(conf - 1 / 6))
    assert r["method"] == "test-method" and r["options"] == {"lr": 0.1}
    assert r["store"]["via"] == "lineage"
    assert r["store"]["path"] == str(boundary_store.resolve())


def test_thresholds_options(boundary_store):
    r = evaluate(boundary_store, EvalConfig(device="cpu", many_threshold=99, few_threshold=21)).result
    assert [row["split"] for row in r["per_class"]] == ["many", "many", "few", "few", "few", "few"]
    assert r["splits"]["medium"] == {"accuracy": None, "classes": 0, "samples": 0}
    with pytest.raises(ConfigError, match="overlap"):
        evaluate(boundary_store, EvalConfig(many_threshold=10, few_threshold=50))


def test_tau_fixed_matches_direct_computation(store):
    r = evaluate(store, EvalConfig(device="cpu", tau=0.7)).result
    with open_store(store) as st:
        pooled, labels, w = st.read("test", "pooled"), st.read("test", "labels"), st.classifier()["weight"]
    norm_w = w / np.linalg.norm(w, axis=1, keepdims=True) ** 0.7
    assert r["top1"] == pytest.approx(((pooled @ norm_w.T).argmax(1) == labels).mean())
    assert r["tau"]["value"] == 0.7 and r["tau"]["mode"] == "fixed"
    assert r["classifier"] == {"kind": "linear", "head": "linear", "tau": 0.7}


def test_tau_auto_is_chosen_on_val(store):
    r = evaluate(store, EvalConfig(device="cpu", tau="auto")).result
    with open_store(store) as st:
        pooled, labels, w = st.read("val", "pooled"), st.read("val", "labels"), st.classifier()["weight"]
    grid = [round(0.1 * i, 1) for i in range(21)]
    expected = []
    for tau in grid:
        preds = (pooled @ (w / np.linalg.norm(w, axis=1, keepdims=True) ** tau).T).argmax(1)
        expected.append(balanced_accuracy(per_class_accuracy(preds, labels, 6)))
    assert r["tau"]["grid"] == grid and r["tau"]["selected_on"] == "val"
    assert r["tau"]["val_balanced_accuracy"] == pytest.approx(expected)
    assert r["tau"]["value"] == grid[int(np.argmax(expected))]  # the first best


def test_tau_refused_where_it_does_not_apply(tmp_path):
    cosine = make_store(tmp_path / "cos.h5", head="cosine")
    with pytest.raises(ConfigError, match="linear and LWS"):
        evaluate(cosine, EvalConfig(device="cpu", tau=1.0))


def test_no_val_split(tmp_path):
    path = make_store(tmp_path / "noval.h5", val_per_class=0)
    with pytest.raises(DataError, match="validation"):
        evaluate(path, EvalConfig(device="cpu", tau="auto"))
    with pytest.raises(DataError, match="no 'val' split"):
        evaluate(path, EvalConfig(device="cpu", on="val"))


@pytest.mark.parametrize("config, message", [
    (EvalConfig(tau=-0.5), "finite number >= 0"), (EvalConfig(tau=float("nan")), "finite"),
    (EvalConfig(tau="best"), "'auto'"), (EvalConfig(on="train"), "valid splits"),
    (EvalConfig(ece_bins=0), "at least 1"), (EvalConfig(tau="auto", tau_grid=()), "tau grid")])
def test_config_is_checked_before_any_work(store, config, message):
    with pytest.raises(ConfigError, match=message):
        evaluate(store, config)


def test_json_input_is_refused(tmp_path):
    path = tmp_path / "e.json"
    path.write_text("{}")
    with pytest.raises(ConfigError, match="compare takes"):
        evaluate(path, EvalConfig())


def test_on_val(store):
    r = evaluate(store, EvalConfig(device="cpu", on="val")).result
    assert r["on"] == "val" and r["samples"] == 18


def test_lineage_hash_and_explicit_store(store, tmp_path):
    lineage = make_lineage({"store": store}, {}, 0)
    lineage["parents"]["store"]["sha256"] = "0" * 64  # as if the store changed
    path = save_classifier(tmp_path / "c.pt", constant_clf([0.0] * 6), method="m",
                           lineage=lineage, options={})
    with pytest.raises(ArtifactError, match="changed"):
        evaluate(path, EvalConfig(device="cpu"))
    r = evaluate(path, EvalConfig(device="cpu"), store=str(store)).result
    assert r["store"]["via"] == "option"
    orphan = save_classifier(tmp_path / "o.pt", constant_clf([0.0] * 6), method="m",
                             lineage={"parents": {}}, options={})
    with pytest.raises(ArtifactError, match="--store"):
        evaluate(orphan, EvalConfig(device="cpu"))


def test_classifier_of_another_shape_is_refused(store, tmp_path):
    path = save_clf(tmp_path / "c.pt", store, constant_clf([0.0] * 4))
    with pytest.raises(ArtifactError, match="4 classes"):
        evaluate(path, EvalConfig(device="cpu"))


def test_fsa_head_tail_from_the_table(store, tmp_path):
    from ltkit.confusing import ConfusingConfig, build_table

    table = build_table(store, ConfusingConfig(head_ratio=0.7, top=2), out=tmp_path / "t.pt")
    with open_store(store) as st:
        clf = Classifier.from_store(st)
    path = save_clf(tmp_path / "c.pt", store, clf, parents={"store": store, "table": table})
    r = evaluate(path, EvalConfig(device="cpu")).result
    acc = np.array([row["accuracy"] for row in r["per_class"]])
    head = [row["index"] for row in r["per_class"] if row["fsa"] == "head"]
    tail = [row["index"] for row in r["per_class"] if row["fsa"] == "tail"]
    assert head == [0, 1] and tail == [2, 3, 4, 5]  # 180 / 224 >= 0.7
    assert r["fsa"]["head"] == {"accuracy": pytest.approx(acc[head].mean()), "classes": 2, "samples": 10}
    assert r["fsa"]["tail"]["accuracy"] == pytest.approx(acc[tail].mean())
    assert r["table"]["via"] == "lineage"


def test_retrieval_on_the_store(store):
    from ltkit.metrics import retrieval_scores

    r = evaluate(store, EvalConfig(device="cpu", retrieval=True)).result["retrieval"]
    with open_store(store) as st:
        ap, hit, _ = retrieval_scores(torch.from_numpy(st.read("test", "pooled")),
                                      torch.from_numpy(st.read("test", "labels")))
    assert r["map"] == pytest.approx(ap.mean()) and r["rank1"] == pytest.approx(hit.mean())
    assert r["queries"] == 30 and r["excluded_queries"] == 0
    assert [r["splits"][g]["classes"] for g in ("many", "medium", "few")] == [1, 2, 3]
    assert [r["splits"][g]["queries"] for g in ("many", "medium", "few")] == [5, 10, 15]


# ---- the command ----------------------------------------------------------------------------

def test_cli_json_on_stdout_summary_on_stderr(store):
    res = CliRunner().invoke(app, ["evaluate", str(store), "--device", "cpu", "--group", "few"])
    assert res.exit_code == 0, res.stderr
    out = strict_json(res.stdout)
    assert out["format"] == "ltkit-evaluation" and out["splits"]["few"]["classes"] == 3
    assert "few classes (3)" in res.stderr and "class5" in res.stderr
    assert "medium classes" not in res.stderr


def test_cli_reads_path_from_stdin(store):
    res = CliRunner().invoke(app, ["evaluate", "-", "-q", "--device", "cpu"], input=f"{store}\n")
    assert res.exit_code == 0 and strict_json(res.stdout)["samples"] == 30
    assert res.stderr == ""


@pytest.mark.parametrize("args, message", [
    (["--tau", "abc"], "--tau"), (["--group", "tail"], "--group"), (["--split", "train"], "--split"),
    (["--split", "few"], "--group few"), (["--metric", "map"], "--metric")])
def test_cli_usage_errors(store, args, message):
    res = CliRunner().invoke(app, ["evaluate", str(store), *args])
    assert res.exit_code == 2 and message in res.stderr and res.stdout == ""


def test_cli_library_error_is_one_line(tmp_path):
    cosine = make_store(tmp_path / "cos.h5", head="cosine")
    res = CliRunner().invoke(app, ["evaluate", str(cosine), "--tau", "auto", "--device", "cpu"])
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1


# ---- the report -----------------------------------------------------------------------------

def test_report_folder(tmp_path):
    import h5py

    path = make_store(tmp_path / "features.h5")
    with h5py.File(path, "r+") as f:  # hostile class names: they must never reach a path
        f.attrs["class_names"] = ["../../escape", "a/b", "c|d", "x" * 80, "", "ok"]
    report = tmp_path / "run" / "report"
    res = CliRunner().invoke(app, ["evaluate", str(path), "--device", "cpu", "--report", str(report)])
    assert res.exit_code == 0, res.stderr
    names = sorted(p.name for p in report.iterdir())
    assert names == [".ltkit-report", "confusion.csv", "confusion_matrix.png", "metrics.json", "per_class.csv",
                     "per_class_accuracy.png", "reliability.png", "summary.md"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        names + ["features.h5", "features.backbone.pt"])
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000
    assert strict_json((report / "metrics.json").read_text()) == strict_json(res.stdout)
    rows = (report / "per_class.csv").read_text().splitlines()
    assert rows[0] == "index,name,train_count,test_count,split,fsa,accuracy" and len(rows) == 7
    assert "c\\|d" in (report / "summary.md").read_text()
    assert "- 30 test images, 6 classes" in (report / "summary.md").read_text()
    assert (report / "confusion.csv").read_text().splitlines()[0].startswith("true\\predicted,0,1")
    again = CliRunner().invoke(app, ["evaluate", str(path), "--device", "cpu", "--report", str(report)])
    assert again.exit_code == 2 and "--force" in again.stderr
    forced = CliRunner().invoke(app, ["evaluate", str(path), "--device", "cpu", "--tau", "1",
                                      "--report", str(report), "--force"])
    assert forced.exit_code == 0 and strict_json((report / "metrics.json").read_text())["tau"]["value"] == 1.0
    assert not (tmp_path / "run" / "report.partial").exists()


# ---- plot-features --------------------------------------------------------------------------

def test_plot_features_cli(store, tmp_path):
    out = tmp_path / "f.png"
    res = CliRunner().invoke(app, ["plot-features", str(store), "--classes", "class0,4", "--out", str(out)])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == str(out) and out.read_bytes()[:8] == PNG
    raw = CliRunner().invoke(app, ["plot-features", str(store), "--no-normalize", "--out", str(tmp_path / "r.png")])
    assert raw.exit_code == 0 and (tmp_path / "r.png").read_bytes()[:8] == PNG
    bad = CliRunner().invoke(app, ["plot-features", str(store), "--classes", "nope", "--out", str(tmp_path / "g.png")])
    assert bad.exit_code == 2 and "nope" in bad.stderr


def test_plot_features_without_maps_plots_pooled_only(store, tmp_path):
    res = CliRunner().invoke(app, ["plot-features", str(store), "--split", "test", "--out", str(tmp_path / "t.png")])
    assert res.exit_code == 0 and "pooled features only" in res.stderr


def test_pick_classes_and_pca():
    counts = np.array([5, 120, 60, 2, 25])
    assert pick_classes(None, list("abcde"), counts) == [1, 2, 0, 3]  # 2 largest, 2 smallest
    assert pick_classes(["c", "0"], list("abcde"), counts) == [2, 0]
    with pytest.raises(ConfigError):
        pick_classes(["9"], list("abcde"), counts)
    x = np.outer(np.arange(10.0), [1.0, 2.0, 0.0]) + 3  # points on a line
    mean, axes, share = pca_2d(x)
    assert share[0] == pytest.approx(1.0) and np.allclose(np.abs(axes[0]), [1, 2, 0] / np.sqrt(5))


def test_plot_thresholds_default_to_fsa_defaults():
    from ltkit.augment import AugmentConfig

    assert (FeaturePlotConfig().tau_s, FeaturePlotConfig().tau_g) == (AugmentConfig().tau_s, AugmentConfig().tau_g)


def test_report_names_the_split_it_measured(tmp_path):
    path = make_store(tmp_path / "features.h5")
    report = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", str(path), "--device", "cpu", "--split", "val",
                                   "--report", str(report)])
    assert res.exit_code == 0, res.stderr
    assert "- 18 val images, 6 classes" in (report / "summary.md").read_text()
