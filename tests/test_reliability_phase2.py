"""Phase-II inputs that are not what they claim (docs/reliability.md, "Phase II: tables,
classifiers, evaluations"): confusing-class tables, classifier artifacts and evaluation JSONs
that contradict themselves, a store of another backbone, options out of range. Every refusal
is checked with test_reliability's `assert_refused`: exit 2, one `error:` line, no traceback,
empty stdout, every input file byte for byte as before.
"""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest
import torch

from ltkit.confusing import ConfusingConfig, build_table
from storefixtures import make_store
from test_reliability import assert_refused, run, snapshot

ITERS = ["--iterations", "3", "--batch-size", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    """A store, its table, a linear (fsa), a cosine (cloud) and an LWS classifier, and an evaluation."""
    root = tmp_path_factory.mktemp("rel2")
    store = make_store(root / "features.h5")
    table = build_table(store, ConfusingConfig(head_ratio=0.8), out=root / "features.table.pt")
    clfs = {}
    fsa = ["--tau-s", "0.5", "--tau-g", "0.3", "--gamma-min", "0", "--tail-draw", "class", "--head-draw", "class"]
    for name, args in (("linear", fsa), ("cosine", ["--augment", "cloud"]), ("lws", ["--classifier", "lws"])):
        clfs[name] = root / f"{name}.pt"
        result = run("augment-finetune", str(table), *ITERS, *args, "--out", str(clfs[name]), "--quiet")
        assert result.exit_code == 0, result.stderr
    result = run("evaluate", str(clfs["linear"]), "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.stderr
    (root / "eval.json").write_text(result.stdout)
    return {"root": root, "store": store, "table": table, "eval": root / "eval.json", **clfs}


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


# ---- confusing-class tables that contradict themselves -----------------------------------------

def _table_cases(table: dict) -> dict[str, dict]:
    tail = table["tail_classes"]
    own, dup, swap, overlap = (copy.deepcopy(table) for _ in range(4))
    own["confusing"][0, 0] = tail[0]                              # a tail class confused with itself
    dup["confusing"][0, 1] = dup["confusing"][0, 0]               # one confusing class twice
    swap["head_classes"], swap["tail_classes"] = table["tail_classes"].clone(), table["head_classes"].clone()
    overlap["tail_classes"][0] = table["head_classes"][0]         # a class both head and tail
    return {"own": own, "duplicate": dup, "swapped": swap, "overlapping": overlap}


@pytest.mark.parametrize("case", ["own", "duplicate", "swapped", "overlapping"])
def test_a_table_that_contradicts_itself_is_refused(work, tmp_path, case):
    table = torch.load(work["table"], weights_only=True)
    bad = _save(_table_cases(table)[case], tmp_path / "bad.table.pt")
    before = snapshot(tmp_path)
    assert_refused(run("augment-finetune", str(bad), "--store", str(work["store"]), *ITERS,
                       "--out", str(tmp_path / "c.pt"), "--quiet"),
                   "damaged confusing-class table", folder=tmp_path, before=before)
    assert_refused(run("evaluate", str(work["linear"]), "--table", str(bad), "--device", "cpu", "--quiet"),
                   "damaged confusing-class table", folder=tmp_path, before=before)


def test_evaluate_table_of_other_class_names_is_refused(work, tmp_path):
    table = torch.load(work["table"], weights_only=True)
    table["class_names"] = table["class_names"][::-1]  # same count, other classes
    bad = _save(table, tmp_path / "names.table.pt")
    before = snapshot(tmp_path)
    assert_refused(run("evaluate", str(work["linear"]), "--table", str(bad), "--device", "cpu", "--quiet"),
                   "table's classes differ", folder=tmp_path, before=before)


# ---- classifiers with impossible values ----------------------------------------------------------

def _classifier_cases(work) -> dict[str, tuple[dict, str]]:
    lin, cos = (torch.load(work[k], weights_only=True) for k in ("linear", "cosine"))
    cases = {}
    for name, scale in (("scale-zero", 0.0), ("scale-negative", -4.0), ("scale-nan", float("nan")),
                        ("scale-text", "big")):
        obj = copy.deepcopy(cos)
        obj["classifier"]["scale"] = scale
        cases[name] = (obj, "damaged classifier")
    ints = copy.deepcopy(lin)
    ints["classifier"]["weight"] = ints["classifier"]["weight"].round().long()
    cases["integer-weights"] = (ints, "not floating-point")
    huge = copy.deepcopy(lin)
    huge["classifier"]["weight"] = huge["classifier"]["weight"].double() * 1e300  # inf in float32
    cases["overflowing-weights"] = (huge, "NaN or infinite")
    lineage = copy.deepcopy(lin)
    lineage["lineage"] = "made by hand"
    cases["lineage-text"] = (lineage, "damaged classifier")
    parents = copy.deepcopy(lin)
    parents["lineage"]["parents"]["store"] = str(work["store"])
    cases["lineage-parent-text"] = (parents, "damaged classifier")
    version = copy.deepcopy(lin)
    version["format_version"] = 2
    cases["other-version"] = (version, "format version 2")
    return cases


@pytest.mark.parametrize("case", ["scale-zero", "scale-negative", "scale-nan", "scale-text", "integer-weights",
                                  "overflowing-weights", "lineage-text", "lineage-parent-text", "other-version"])
def test_a_classifier_with_impossible_values_is_refused(work, tmp_path, case):
    obj, needle = _classifier_cases(work)[case]
    bad = _save(obj, tmp_path / "bad.pt")
    before = snapshot(tmp_path)
    assert_refused(run("evaluate", str(bad), "--device", "cpu", "--quiet"), needle, folder=tmp_path, before=before)


# ---- evaluations that are not what evaluate printed -------------------------------------------------

@pytest.mark.parametrize("case, needle", [
    ("nan", "top1 is not a number in [0, 1]"), ("500%", "balanced_accuracy is not a number in [0, 1]"),
    ("split-500%", "many split's accuracy"), ("half-sample", "counts are not whole numbers"),
    ("version-2", "format version 2"), ("no-splits", "no splits"), ("tau-text", "tau")])
def test_compare_refuses_a_doctored_evaluation(work, tmp_path, case, needle):
    text = work["eval"].read_text()
    obj = json.loads(text)
    if case == "nan":
        text = text.replace(f'"top1": {json.dumps(obj["top1"])}', '"top1": NaN', 1)
        assert "NaN" in text
    else:
        if case == "500%":
            obj["balanced_accuracy"] = 5.0
        elif case == "split-500%":
            obj["splits"]["many"]["accuracy"] = 5.0
        elif case == "half-sample":
            obj["splits"]["few"]["samples"] = 2.5
        elif case == "version-2":
            obj["format_version"] = 2
        elif case == "no-splits":
            del obj["splits"]
        elif case == "tau-text":
            obj["tau"] = {"value": "one", "mode": "fixed"}
        text = json.dumps(obj)
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    before = snapshot(tmp_path)
    assert_refused(run("compare", str(bad), str(work["eval"])), needle, folder=tmp_path, before=before)
    assert_refused(run("compare", "-", str(work["eval"]), input=text), needle, folder=tmp_path, before=before)


def test_compare_reads_an_evaluation_from_stdin(work):
    """`ltkit evaluate s.h5 | ltkit compare - x.json`: the JSON itself on stdin."""
    evaluated = run("evaluate", str(work["store"]), "--device", "cpu", "--quiet")
    result = run("compare", "-", str(work["eval"]), "--format", "csv", input=evaluated.stdout)
    assert result.exit_code == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[1].startswith("stdin,phase1,") and rows[2].startswith("eval,fsa,")
    by_path = run("compare", "-", "--format", "csv", input=f"{work['eval']}\n")  # a path still works
    assert by_path.exit_code == 0 and by_path.stdout.splitlines()[1].startswith("eval,fsa,")


# ---- a store of another backbone -------------------------------------------------------------------

def test_evaluate_refuses_a_store_of_another_backbone_unless_forced(work, tmp_path):
    other = make_store(tmp_path / "other.h5", seed=1)  # same shape and classes, another backbone
    before = snapshot(tmp_path)
    assert_refused(run("evaluate", str(work["linear"]), "--store", str(other), "--device", "cpu", "--quiet"),
                   "its backbone differs", folder=tmp_path, before=before)
    forced = run("evaluate", str(work["linear"]), "--store", str(other), "--force", "--device", "cpu", "--quiet")
    assert forced.exit_code == 0 and "warning:" in forced.stderr and "backbone differs" in forced.stderr
    copy_of_own = tmp_path / "own.h5"  # the classifier's own store, moved: no complaint
    copy_of_own.write_bytes(work["store"].read_bytes())
    moved = run("evaluate", str(work["linear"]), "--store", str(copy_of_own), "--device", "cpu", "--quiet")
    assert moved.exit_code == 0 and moved.stderr == ""


# ---- options out of range, refused before anything is written ----------------------------------------

def test_phase2_option_problems_are_one_line(work, tmp_path):
    one = make_store(tmp_path / "one.h5", num_classes=1)
    before = snapshot(tmp_path)
    for args, needle in [
        (["augment-finetune", str(work["table"]), "--classifier", "tau-norm", "--tau", "foo",
          "--out", str(tmp_path / "c.pt")], "--tau takes a number >= 0 (e.g. 1.0) or auto, got 'foo'"),
        (["augment-finetune", str(work["table"]), "--classifier", "tau-norm", "--tau", "nan",
          "--out", str(tmp_path / "c.pt")], "--tau takes a number >= 0 (e.g. 1.0) or auto, got 'nan'"),
        (["evaluate", str(work["store"]), "--ece-bins", "10000000"], "--ece-bins 10000000: at most 1000"),
        (["confusing-classes", str(one)], "a store of one class has no tail"),
        (["augment-finetune", str(work["table"]), "--method-option", "alpha=1"], "has no such option"),
    ]:
        assert_refused(run(*args, "--quiet"), needle, folder=tmp_path, before=before)


@pytest.mark.parametrize("args, needle", [
    (["--augment", "cloud", "--classifier", "lws"], "cosine classifier"),
    (["--batch-size", "100"], "does not fit a balanced batch"),
    (["--classifier", "lws", "--head", "cosine"], "linear Phase-I"),
    (["--head", "flat"], "1x1"),
])
def test_augment_finetune_on_a_store_writes_no_table_when_it_refuses(tmp_path, args, needle):
    """The store's default table is written only once nothing else can be refused."""
    cosine, flat = "--head" in args and "cosine" in args, "flat" in args
    args = [a for a in args if a not in ("--head", "cosine", "flat")]
    store = make_store(tmp_path / "s.h5", head="cosine" if cosine else "linear",
                       height=1 if flat else 4, width=1 if flat else 4)
    before = snapshot(tmp_path)
    assert_refused(run("augment-finetune", str(store), "--device", "cpu", "--iterations", "2", *args, "--quiet"),
                   needle, folder=tmp_path, before=before)
    assert sorted(snapshot(tmp_path)) == sorted(before)  # no new table (nor anything else)


# ---- random damage to every field -----------------------------------------------------------------------

def _damages(value, rng: random.Random) -> list:
    """Values that are wrong for a field holding ``value``: another type, another length,
    NaN / inf, negative, huge, swapped entries."""
    out = ["oops", None, {"x": 1}]
    if isinstance(value, torch.Tensor):
        flat = value.flatten()
        out += [value.tolist(), value[:-1] if len(value) > 1 else value.repeat(2), torch.cat([value, value]),
                value.double().fill_(math.nan), value.double().fill_(math.inf), value.double() * 1e300]
        if value.is_floating_point():
            out += [value.long(), -value.abs() - 1]
        else:
            out += [value.float(), value - 100, value + 10**12]
        if flat.numel() > 1 and len(set(flat.tolist())) > 1:  # two entries swapped (order matters here)
            i, j = rng.sample(range(flat.numel()), 2)
            while flat[i] == flat[j]:
                i, j = rng.sample(range(flat.numel()), 2)
            swapped = flat.clone()
            swapped[i], swapped[j] = flat[j], flat[i]
            out.append(swapped.reshape(value.shape))
    elif isinstance(value, float):
        out += [math.nan, math.inf, -value - 1.0, 1e300, str(value), int(value) or 7]
    elif isinstance(value, int) and not isinstance(value, bool):
        out += [-value - 1, 10**12, float(value) + 0.5, str(value), math.nan]
    elif isinstance(value, list):
        out += [value[:-1], value + value, value[::-1] if value != value[::-1] else [1] * len(value),
                [None] * len(value)]
    elif isinstance(value, dict):
        out += [[], list(value)]
    return out


# fields whose damage cannot be seen without the data: the order of confusing classes in a row
# (the store would have to be re-ranked), a linear classifier's bias sign, ...; see the docs
TABLE_FIELDS = ("head_classes", "tail_classes", "confusing", "scores", "head_ratio", "top", "head_fraction",
                "class_names", "train_counts", "lineage", "versions", "format_version")
CLASSIFIER_FIELDS = ("format_version", "method", "options", "lineage", "history", "classifier",
                     "classifier.kind", "classifier.weight", "classifier.bias", "classifier.scale",
                     "classifier.class_scale")


def _harmless(kind: str, field: str, value, original) -> bool:
    """A "damage" that leaves a valid artifact: free-form records (method, options, history) of the
    right type, an optional tensor left out where the kind has none, weights still weights
    (negative or reordered weights are weights)."""
    if isinstance(value, torch.Tensor) and isinstance(original, torch.Tensor) and value.is_floating_point() \
            and value.shape == original.shape and bool(torch.isfinite(value.float()).all()):
        return True
    if (field == "options" and isinstance(value, dict)) or (field == "method" and isinstance(value, str)):
        return True
    if field == "history" and isinstance(value, list) and all(isinstance(row, dict) for row in value):
        return True
    if field == "classifier.scale" and isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return True  # a whole-number scale is a scale
    optional = {"classifier.bias": True, "classifier.scale": kind != "cosine", "classifier.class_scale": kind != "lws"}
    return value is None and optional.get(field, False)


def _damaged(obj: dict, field: str, rng: random.Random) -> tuple[dict, str, object] | None:
    """A copy of ``obj`` with ``field`` damaged at random (or removed), what was done, the new value."""
    keys = field.split(".")
    holder = obj
    for key in keys[:-1]:
        holder = holder[key]
    if keys[-1] not in holder:
        return None
    choices = _damages(holder[keys[-1]], rng) + ["<missing>"]
    choice = rng.choice(choices)
    label = "<missing>" if isinstance(choice, str) and choice == "<missing>" else repr(choice)[:40]
    out = copy.deepcopy(obj)
    target = out
    for key in keys[:-1]:
        target = target[key]
    if label == "<missing>":
        del target[keys[-1]]
        choice = None
    else:
        target[keys[-1]] = choice
    return out, label, choice


def _get(obj: dict, field: str):
    for key in field.split("."):
        obj = obj[key]
    return obj


@pytest.fixture()
def built_once(monkeypatch):
    """typer rebuilds the click command of the whole app on every CliRunner.invoke (~0.1 s,
    most of a refusal's time): build it once for the hundreds of invocations below."""
    import typer.testing

    from ltkit.cli import app

    command = typer.testing._get_command(app)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: command)


def test_random_damage_to_every_field_is_one_line_and_changes_nothing(work, tmp_path, built_once):
    """Seeded random damage (another type, another length, NaN / inf, negative, huge, missing,
    swapped entries) to every field of a table and of three classifiers (linear, cosine, LWS),
    written with torch.save as plain dicts: augment-finetune, evaluate and evaluate --table
    refuse each in one line, and nothing on disk changes."""
    rng = random.Random(19)
    table = torch.load(work["table"], weights_only=True)
    bases = {k: torch.load(work[k], weights_only=True) for k in ("linear", "cosine", "lws")}
    bad = tmp_path / "bad.pt"
    before = snapshot(work["root"])
    tried = 0
    for _ in range(8):  # rounds: each field of each artifact damaged anew
        for field in TABLE_FIELDS:
            obj, label, _ = _damaged(table, field, rng)
            _save(obj, bad)
            for args in (["augment-finetune", str(bad), "--store", str(work["store"]), *ITERS,
                          "--out", str(tmp_path / "c.pt")],
                         ["evaluate", str(work["linear"]), "--table", str(bad), "--device", "cpu"]):
                result = run(*args, "--quiet")
                assert result.exit_code == 2, f"table {field} = {label}: {args[0]} exit {result.exit_code} " \
                                              f"{result.stderr[-300:]}"
                assert_refused(result, "error:")
                tried += 1
        for name, base in bases.items():
            for field in CLASSIFIER_FIELDS:
                made = _damaged(base, field, rng)
                if made is None or _harmless(name, field, made[2], _get(base, field)):
                    continue
                _save(made[0], bad)
                result = run("evaluate", str(bad), "--device", "cpu", "--quiet")
                assert result.exit_code == 2, f"{name} classifier {field} = {made[1]}: exit {result.exit_code} " \
                                              f"{result.stderr[-300:]}"
                assert_refused(result, "error:")
                tried += 1
    assert tried > 300 and snapshot(work["root"]) == before
    assert not (tmp_path / "c.pt").exists()
