"""benchmarks/results.py, the generator of docs/results.md: the plan's commands, the gap
arithmetic and every section, on made-up figures (nothing is trained or run here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import results  # noqa: E402
import results_plan as plan  # noqa: E402
import results_run  # noqa: E402
from results_sections import gap_split, recipe_rows, render  # noqa: E402

RUNS = Path("runs/results")

# The commands that trained and extracted the stores under /work/ltkit-runs/results (the
# queue scripts of sessions 4-6; the ceiling extracted with extract's defaults), word for
# word: the page's commands must be these, so that train-backbone and extract reuse those
# stores instead of training again.
R = "--data fashion-mnist-lt --profile exp --arch resnet32 --batch-size 128 --lr 0.1 --seed 0"
B10 = "--data fashion-mnist-lt --profile exp --arch resnet32 --batch-size 128 --seed 0 --epochs 10 --imbalance 100 " \
      "--loss ce --bound-per-class 500"
TRAINED = {
    "if100-ce": f"{R} --epochs 10 --imbalance 100 --loss ce --bound-per-class 500",
    "if100-ce-4ep": f"{R} --epochs 4 --imbalance 100 --loss ce --bound-per-class 500",
    "if1000-ce": f"{R} --epochs 10 --imbalance 1000 --loss ce --bound-per-class 500",
    "if1000-ce-4ep": f"{R} --epochs 4 --imbalance 1000 --loss ce --bound-per-class 500",
    "if100-balanced-softmax": f"{R} --epochs 10 --imbalance 100 --loss balanced-softmax --bound-per-class 500",
    "full-ce-30ep": f"{R} --epochs 30 --imbalance 1 --loss ce",
    "recipes/mixup": f"{B10} --lr 0.1 --mixup 0.2",
    "recipes/randaugment": f"{B10} --lr 0.1 --augment-policy randaugment",
    "recipes/wd5e-3": f"{B10} --lr 0.1 --weight-decay 5e-3",
    "recipes/wb-stage1": f"{B10} --lr 0.01 --weight-decay 5e-3",
    "recipes/label-smoothing": f"{B10} --lr 0.1 --label-smoothing 0.1",
    "recipes/cutmix": f"{B10} --lr 0.1 --cutmix 1.0",
    "recipes/adamw": f"{B10} --lr 1e-3 --optimizer adamw --weight-decay 0.05",
    "recipes/ls-mixup": "--data fashion-mnist-lt --profile exp --arch resnet32 --batch-size 128 --seed 0 "
                        "--imbalance 100 --loss ce --bound-per-class 500 --epochs 10 --lr 0.1 --label-smoothing 0.1 "
                        "--mixup 0.2",
    "recipes30/ce": B10.replace("--epochs 10", "--epochs 30") + " --lr 0.1",
    "recipes30/label-smoothing": "--data fashion-mnist-lt --profile exp --arch resnet32 --batch-size 128 --seed 0 "
                                 "--loss ce --bound-per-class 500 --imbalance 100 --epochs 30 --lr 0.1 "
                                 "--label-smoothing 0.1",
    "recipes30/if1000-label-smoothing": "--data fashion-mnist-lt --profile exp --arch resnet32 --batch-size 128 "
                                        "--seed 0 --loss ce --bound-per-class 500 --imbalance 1000 --epochs 30 "
                                        "--lr 0.1 --label-smoothing 0.1",
}


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_each_backbone_command_is_the_one_that_trained_its_store(name):
    b = plan.BY_NAME[name]
    assert " ".join(b.train_args(RUNS)) == f"train-backbone {TRAINED[name]} --out runs/results/{name}/backbone.pt"
    maps = [] if b.ceiling else ["--spatial-splits", "train,val,test,bound"]
    assert b.extract_args(RUNS) == ["extract", f"runs/results/{name}/backbone.pt", *maps,
                                    "--out", f"runs/results/{name}/features.h5"]


def test_every_long_tailed_backbone_holds_a_bound_split_and_the_ceilings_none():
    for b in plan.BACKBONES:
        assert ("--bound-per-class 500" in b.train) is not b.ceiling, b.name
        assert ("--imbalance 1 " in b.train + " ") is b.ceiling, b.name
    assert set(plan.CEILINGS.values()) == {b.name for b in plan.BACKBONES if b.ceiling}
    sections = {*plan.PHASE2_ON, *plan.LOSSES, *plan.SYSTEM, *plan.BOUND_ON, *plan.SWEEP_ON, *plan.RECIPES}
    assert sections <= set(plan.BY_NAME)


def test_gap_split_arithmetic():
    assert gap_split(80.0, 88.0, 90.0) == pytest.approx((80.0, 20.0))  # 8 of 10 points are the classifier's
    assert gap_split(80.0, 80.0, 90.0) == pytest.approx((0.0, 100.0))  # no head helps: all representation
    assert gap_split(80.0, 91.0, 90.0) == pytest.approx((110.0, -10.0))  # a bound past the ceiling is said so
    assert gap_split(90.0, 92.0, 90.0) is None and gap_split(80.0, None, 90.0) is None


def fig(balanced, tail=None, clf_gap=None, few=None):
    return {"overall": balanced, "balanced": balanced, "many": balanced, "medium": balanced, "few": few,
            "tail": tail, "bound": None, "clf_gap": clf_gap}


def prep(name, acc, val=None):
    return {"name": name, "phase1": fig(acc, 70.0), "val": val if val is not None else acc, "has_bound": True,
            "commands": [f"ltkit x {name}"], "store": f"runs/results/{name}/features.h5"}


def page_data(**preps):
    data = {"seeds": [0, 1], "runs_folder": "runs/results", "skipped": [], "runs": {}, "sweeps": {},
            "preps": {b.name: None for b in plan.BACKBONES}}
    for name, acc in preps.items():
        data["preps"][name.replace("_", "-").replace("recipes-", "recipes/")] = prep(name, acc)
    return data


def runs(*figs, command="ltkit y"):
    return {"runs": list(figs), "command": command}


def test_phase2_tables_show_mean_std_gaps_the_system_and_dashes():
    data = page_data(if100_ce=80.0, full_ce=90.0, if100_ldam_drw=84.0)
    data["preps"]["full-ce"] = prep("full-ce", 90.0)
    phase2 = {m: runs(fig(85.0, 80.0), fig(86.0, 81.0), command=f"ltkit {m}") for m in plan.PHASE2}
    data["runs"] = {"if100-ce": phase2, "if100-ldam-drw": {"fsa": phase2["fsa"]}}
    page = render(data)
    assert "| fsa | 85.50 ± 0.71 |" in page  # mean ± std over the seeds
    assert "| 55 % |" in page  # (85.5 - 80) / (90 - 80) of the gap to the ceiling
    assert "| LDAM-DRW: + FSA |" in page and "FSA closes 55 %" in page
    assert " — |" in page  # the empty few split is a dash, never 0
    assert "| CE, full balanced set, 10 epochs (ceiling) | 90.00 |" in page


def test_missing_backbones_are_listed_with_their_command_and_time():
    data = page_data(if100_ce=80.0)
    page = render(data)
    assert "## Not measured yet" in page
    scl = plan.BY_NAME["if100-scl-rsg-ldam"]
    assert f"- SCL + RSG + LDAM-DRW (~{scl.minutes} min): `ltkit {' '.join(scl.train_args(RUNS))}`" in page
    assert "runs/results/if100-ce/backbone.pt`" not in page.split("## Not measured yet")[1]  # it exists
    total = sum(b.minutes for b in plan.BACKBONES) - plan.BY_NAME["if100-ce"].minutes
    assert f"about {total // 60} h {total % 60:02d} min of CPU" in page


def test_no_train_leaves_a_missing_backbone_missing_and_writes_nothing(tmp_path):
    assert results_run.prepare(plan.BY_NAME["if100-ce"], tmp_path, train=False) is None
    assert not list(tmp_path.iterdir())


def test_bound_section_gives_classifier_gap_closed_and_the_gap_split():
    data = page_data(if100_ce=80.0)
    data["preps"]["full-ce"], data["preps"]["full-ce-30ep"] = prep("full-ce", 90.0), prep("full-ce-30ep", 92.0)
    data["runs"]["if100-ce"] = {"crt": runs(fig(84.0, clf_gap=66.0), fig(84.0, clf_gap=68.0)),
                                "crt-bound": runs(fig(86.0), fig(86.0)),
                                "spatial": runs(fig(85.0, clf_gap=62.5), fig(85.0, clf_gap=62.5)),
                                "spatial-bound": runs(fig(88.0), fig(88.0))}
    page = render(data)
    assert "### CE (`if100-ce`)" in page
    assert "| pooled cRT | 84.00 ± 0.00 |" in page and "| 67 % | 40 % |" in page  # clf gap mean, gap to 90
    # the better bound (spatial, 88) splits the gap: 8 of 10 points to the 10-epoch ceiling, 8 of 12 to 30 epochs
    assert "| CE | 10 epochs | 80.00 | 88.00 (spatial bound) | 90.00 | 80 % | 20 % |" in page
    assert "| CE | 30 epochs | 80.00 | 88.00 (spatial bound) | 92.00 | 67 % | 33 % |" in page


def sweep(chosen, pick, crt, rank=1):
    return {"chosen": chosen, "test_rank": rank, "ranked": 15, "selected_on": "bound",
            "pick": {"balanced": pick, "few": None, "tail": pick - 1, "overall": pick},
            "crt": {"balanced": crt, "few": None, "tail": crt - 1, "overall": crt},
            "markdown": f"| sweep table of {chosen} |", "command": "ltkit sweep t.pt --seeds 3 --out s"}


def test_sweep_section_gives_the_pick_its_test_rank_and_the_sweeps_table():
    data = page_data(if100_ce=80.0)
    data["sweeps"]["if100-ce"] = sweep("spatial-class-balanced-crt", 88.2, 87.7, rank=2)
    page = render(data)
    assert "| CE | 80.00 | 87.70 | spatial-class-balanced-crt | 88.20 | 2 of 15 | — / — | 87.20 / 86.70 |" in page
    assert "| sweep table of spatial-class-balanced-crt |" in page
    assert "ltkit sweep t.pt --seeds 3 --out s" in page  # in the commands


def test_recipe_rows_measure_the_pipeline_from_the_ce_phase1_to_both_ceilings():
    data = page_data(if100_ce=80.0, recipes_mixup=81.0)
    data["preps"]["recipes/mixup"]["val"] = 86.0
    data["preps"]["full-ce"], data["preps"]["full-ce-30ep"] = prep("full-ce", 90.0), prep("full-ce-30ep", 95.0)
    data["runs"] = {"if100-ce": {"crt": runs(fig(84.0))}, "recipes/mixup": {"crt": runs(fig(85.0))}}
    data["sweeps"]["recipes/mixup"] = sweep("wb", 86.0, 85.0)
    rows = {r["name"]: r for r in recipe_rows(data)}
    assert rows["if100-ce"]["final"] == 84.0 and rows["if100-ce"]["gaps"] == pytest.approx({10: 40.0, 30: 4 / 15 * 100})
    assert rows["recipes/mixup"]["final"] == 86.0 and rows["recipes/mixup"]["gaps"][10] == pytest.approx(60.0)
    page = render(data)
    assert "| mixup 0.2 | 81.00 | 86.00 | 85.00 | wb | 86.00 | 60 % | 40 % |" in page
    assert "Validation chooses **mixup 0.2**" in page


def test_readme_headline_quotes_the_page_with_the_sweep_and_the_ceilings(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{results.README_START}\nold\n{results.README_END}\nrest\n")
    data = page_data(if100_ce=80.0)
    data["runs"]["if100-ce"] = {m: runs(fig(85.0, 85.0), fig(87.0, 87.0)) for m in plan.PHASE2}
    results.update_readme(data, readme)
    assert "| cRT | 86.00 ± 1.41 | 86.00 ± 1.41 | — |" in readme.read_text()  # no ceiling yet: no gap
    data["preps"]["full-ce"], data["preps"]["full-ce-30ep"] = prep("full-ce", 90.0), prep("full-ce-30ep", 92.0)
    data["sweeps"]["if100-ce"] = sweep("spatial-class-balanced-crt", 88.0, 86.0)
    results.update_readme(data, readme)
    text = readme.read_text()
    assert "| cRT | 86.00 ± 1.41 | 86.00 ± 1.41 | 60 % |" in text and "old" not in text
    assert "| `ltkit sweep`'s pick (spatial-class-balanced-crt) | 88.00 | 87.00 | 80 % |" in text
    assert "| ceiling: CE on the full balanced set, 30 epochs | 92.00 | 70.00 | 120 % |" in text
    assert text.startswith("intro\n") and text.endswith("rest\n")


def test_seeds_must_count_from_zero():
    with pytest.raises(SystemExit) as exc:
        results.main(["--seeds", "1", "2", "--no-train"])
    assert exc.value.code == 2


def test_a_run_with_a_bound_twin_has_it_made_first_and_only_with_a_bound_split():
    keys = ("none", "crt", "spatial")
    assert results_run.with_twins(keys, {"has_bound": True}) == ["none", "crt-bound", "crt", "spatial-bound", "spatial"]
    assert results_run.with_twins(keys, {"has_bound": False}) == list(keys)


def test_a_ceilings_tail_is_its_accuracy_on_the_if100_stores_tail_classes(tmp_path):
    other = tmp_path / "phase1.json"
    classes = [{"index": i, "fsa": "tail" if i >= 2 else "head", "test_count": 1000, "accuracy": 0.5} for i in range(4)]
    other.write_text(json.dumps({"per_class": classes}))
    ceiling = {"per_class": [{"index": i, "test_count": 1000 if i != 3 else 3000, "accuracy": a}
                             for i, a in enumerate((0.1, 0.2, 0.9, 0.7))]}
    assert results_run.tail_of(ceiling, other) == pytest.approx(100 * (0.9 * 1000 + 0.7 * 3000) / 4000)
    assert results_run.tail_of(ceiling, tmp_path / "absent.json") is None


def test_a_sweep_summary_takes_a_missing_group_as_no_figure():
    row = lambda b: {"balanced": {"mean": b, "std": 0.0}, "overall": {"mean": b, "std": 0.0}}  # noqa: E731
    methods = [("phase1", 0.8), ("class-balanced-crt", 0.85), ("wb", 0.86)]
    result = {"methods": [{"method": m, "summary": row(b)} for m, b in methods],
              "chosen": {"method": "wb", "test_rank": 1, "ranked": 2}, "selection": {"compared_on": "bound"}}
    s = results_run.sweep_summary(result)
    assert s["pick"]["balanced"] == pytest.approx(86.0) and s["pick"]["few"] is None
    assert s["crt"]["balanced"] == pytest.approx(85.0) and (s["chosen"], s["test_rank"]) == ("wb", 1)
