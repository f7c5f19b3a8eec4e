"""Spatial heads from the cache (issue 15): training, the artifact, evaluate, the bound split,
FSA on maps, the refusals, and the bound numbers of evaluate / compare."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ltkit.augment import AugmentConfig
from ltkit.augment.bank import bank_from_tensors, load_bank
from ltkit.augment.fsa_maps import MapFeatureSpaceAugmenter
from ltkit.bound import gap_closed
from ltkit.classifiers import Classifier, load_classifier
from ltkit.compare import compare_rows, render
from ltkit.confusing import ConfusingConfig, build_table, load_table
from ltkit.errors import ArtifactError, ConfigError, DataError
from ltkit.evaluate import EvalConfig, evaluate
from ltkit.finetune import FinetuneConfig, augment_finetune, finetune_classifier
from ltkit.heads import map_bank
from ltkit.spatial_head import SpatialHead
from ltkit.store import open_store
from storefixtures import make_store

FAST = dict(iterations=15, batch_size=32, device="cpu", head_width=0, head_depth=1)
MAPS = ("train", "val", "test", "bound")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    store = make_store(tmp_path_factory.mktemp("sp") / "features.h5", bound_per_class=4, spatial_splits=MAPS)
    return build_table(store, ConfusingConfig(head_ratio=0.8))


def finetune(table, out, **options):
    fast = FAST if options.get("head") == "spatial" else {k: v for k, v in FAST.items() if not k.startswith("head")}
    return augment_finetune(table, FinetuneConfig.from_options(fast | options), out=out)


@pytest.mark.parametrize("augment, classifier", [("class-balanced", "crt"), ("none", "linear"),
                                                 ("fsa", "crt"), ("class-balanced", "lws")])
def test_spatial_head_trains_saves_and_evaluate_scores_the_test_maps(table, tmp_path, augment, classifier):
    path = finetune(table, tmp_path / "h.pt", head="spatial", augment=augment, classifier=classifier)
    clf, meta = load_classifier(path)
    assert isinstance(clf, SpatialHead) and meta["format_version"] == 2 and meta["head"]["kind"] == "spatial"
    assert meta["options"]["head"] == "spatial" and meta["method"].startswith("spatial-")
    from ltkit.inspection import inspect_artifact
    assert inspect_artifact(str(path))["head"] == {"kind": "spatial", "config": meta["head"]["config"],
                                                   "channels": meta["head"]["channels"]}
    result = evaluate(path, EvalConfig(device="cpu")).result
    assert result["classifier"] == {"kind": "spatial", "head": "spatial", "tau": None}
    with open_store(meta["lineage"]["parents"]["store"]["path"]) as st:
        maps = torch.from_numpy(st.read("test", "features"))  # (N, C, H, W)
        labels = st.read("test", "labels")
    with torch.no_grad():
        preds = clf(maps).argmax(1).numpy()
    assert result["top1"] == pytest.approx(float((preds == labels).mean()))


def test_head_block_separable_trains_is_kept_in_the_artifact_and_loads_back(table, tmp_path):
    from ltkit.spatial_head import SeparableBlock

    path = finetune(table, tmp_path / "sep.pt", head="spatial", classifier="crt", head_block="separable",
                    head_width=16)
    clf, meta = load_classifier(path)
    assert meta["options"]["head_block"] == "separable" and meta["head"]["config"]["block"] == "separable"
    assert [type(block) for block in clf.blocks] == [SeparableBlock]  # FAST: one block
    with pytest.raises(ConfigError, match="head block"):
        finetune(table, tmp_path / "bad.pt", head="spatial", classifier="crt", head_block="dense")


def test_a_fresh_spatial_head_on_the_phase1_weights_is_phase1(table):
    with open_store(load_table(table)["lineage"]["parents"]["store"]["path"]) as st:
        phase1 = Classifier.from_store(st)
        one_block = FinetuneConfig(head_depth=1, head_width=0).spatial_head()
        head = SpatialHead(8, phase1.num_classes, one_block, phase1).eval()
        maps = torch.from_numpy(st.read("test", "features")).float()  # (N, C, H, W)
        pooled = torch.from_numpy(st.read("test", "pooled"))
    with torch.no_grad():  # residual blocks, last BN at zero, post-ReLU maps: fc(mean)
        assert torch.allclose(head(maps), phase1(maps.mean((2, 3))), atol=1e-4)
        assert torch.allclose(maps.mean((2, 3)), pooled, atol=2e-2)  # the stored pooled is that mean


def test_streamed_maps_train_the_same_spatial_head(table, tmp_path):
    t = load_table(table)
    with open_store(t["lineage"]["parents"]["store"]["path"]) as st:
        hw = st.shape("train", "features")[2:]
        phase1 = Classifier.from_store(st)
        cfg = FinetuneConfig.from_options(FAST | {"head": "spatial", "classifier": "crt",
                                                  "augment": "class-balanced"}).resolved(st.rows("train"), 3)
        heads = []
        for budget, scratch in ((4 << 30, True), (0, True), (0, False)):  # resident, mapped, read per draw
            bank = map_bank(load_bank(st, t, device=torch.device("cpu"), spatial=True, resident_bytes=budget,
                                      scratch=scratch, scratch_dir=tmp_path), hw)
            heads.append(finetune_classifier(bank, phase1, cfg)[0])
    for other in heads[1:]:
        for a, b in zip(heads[0].state_dict().values(), other.state_dict().values()):
            assert torch.equal(a, b)


def test_map_rows_are_the_stored_maps_from_every_source_in_channels_last_memory(table, tmp_path):
    t = load_table(table)
    with open_store(t["lineage"]["parents"]["store"]["path"]) as st:
        hw, n = st.shape("train", "features")[2:], st.rows("train")
        image = torch.tensor([n - 1, 0, 2, 0])  # repeats and any order
        stored = torch.from_numpy(st.read("train", "features", np.arange(n))[image.numpy()]).float()  # (B, C, H, W)
        for budget, scratch in ((4 << 30, True), (0, True), (0, False)):  # resident, mapped, read per draw
            bank = map_bank(load_bank(st, t, device=torch.device("cpu"), spatial=True, resident_bytes=budget,
                                      scratch=scratch, scratch_dir=tmp_path), hw)
            maps = bank.pooled[image, torch.zeros_like(image)]
            assert maps.dtype == torch.float32 and torch.equal(maps, stored)
            assert maps.is_contiguous(memory_format=torch.channels_last)


def test_train_on_bound_trains_on_the_bound_split_for_the_steps_of_its_twin(table, tmp_path):
    t = load_table(table)
    with open_store(t["lineage"]["parents"]["store"]["path"]) as st:
        bank = load_bank(st, t, device=torch.device("cpu"), spatial=False, split="bound")
        assert torch.equal(bank.labels, torch.from_numpy(st.read("bound", "labels")))
        n_bound, n_train = st.rows("bound"), st.rows("train")
    for head in ("linear", "spatial"):
        path = augment_finetune(table, FinetuneConfig.from_options(
            {"device": "cpu", "classifier": "crt", "head": head, "train_on": "bound"}
            | ({"head_width": 0} if head == "spatial" else {})),
            out=tmp_path / f"{head}.pt")
        _, meta = load_classifier(path)
        batch = meta["options"]["batch_size"]
        assert meta["options"]["train_on"] == "bound" and meta["method"].endswith("-bound")
        # the steps of its train-split twin (10 epochs of train), not 10 epochs of the smaller bound split:
        # a bound head given fewer steps than the head it bounds measures the schedule, not the split
        assert meta["options"]["iterations"] == math.ceil(10 * n_train / batch) != math.ceil(10 * n_bound / batch)


def test_the_head_width_defaults_to_128_for_a_fresh_final_layer_and_the_maps_own_for_the_phase1_one(table, tmp_path):
    for classifier, depth, width, block in (("crt", 2, 128, "conv"), ("lws", 2, 0, "conv"),
                                            ("linear", 2, 0, "conv")):
        cfg = FinetuneConfig.from_options({"head": "spatial", "classifier": classifier})
        assert cfg.head_width is None and cfg.head_depth is None and cfg.head_block is None
        assert (cfg.spatial_head().depth, cfg.spatial_head().width, cfg.spatial_head().block) == (depth, width, block)
        resolved = cfg.resolved(100, 3)  # what an artifact records: the head that was built
        assert (resolved.head_depth, resolved.head_width, resolved.head_block) == (depth, width, block)
    given = FinetuneConfig.from_options({"head": "spatial", "classifier": "crt", "head_depth": 1,
                                         "head_block": "separable"})
    assert (given.spatial_head().depth, given.spatial_head().width, given.spatial_head().block) == (1, 128, "separable")
    options = {k: v for k, v in FAST.items() if k != "head_width"}
    path = augment_finetune(table, FinetuneConfig.from_options(options | {"head": "spatial", "classifier": "lws"}),
                            out=tmp_path / "lws.pt")  # not refused: the default width is the maps' own
    _, meta = load_classifier(path)
    assert meta["options"]["head_width"] == 0 and meta["head"]["config"]["width"] == 0
    path = augment_finetune(table, FinetuneConfig.from_options(options | {"head": "spatial", "classifier": "crt"}),
                            out=tmp_path / "crt.pt")
    assert load_classifier(path)[1]["head"]["config"]["width"] == 128


def test_refusals_are_one_line_naming_the_fix(table, tmp_path):
    cases = [({"head": "spatial", "classifier": "tau-norm"}, "use --classifier crt"),
             ({"head": "spatial", "classifier": "logit-adjust"}, "use --classifier crt"),
             ({"head": "spatial", "augment": "cloud", "classifier": "crt"}, "--head spatial trains on maps"),
             ({"head": "spatial", "classifier": "linear", "head_width": 16}, "--head-width 0"),
             ({"head": "spatial", "classifier": "lws", "head_width": 16}, "--classifier crt")]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            finetune(table, tmp_path / "x.pt", **options)
    bare = make_store(tmp_path / "bare.h5")  # maps for train only, no bound split
    with pytest.raises(ConfigError, match=r"ltkit extract .* --spatial-splits train,val,test"):
        augment_finetune(bare, FinetuneConfig.from_options(FAST | {"head": "spatial", "classifier": "crt"}),
                         out=tmp_path / "y.pt")
    with pytest.raises(ConfigError, match="train-backbone --bound-per-class N"):
        augment_finetune(bare, FinetuneConfig.from_options({"device": "cpu", "classifier": "crt", "train_on": "bound"}),
                         out=tmp_path / "z.pt")
    assert not (tmp_path / "y.pt").exists() and not (tmp_path / "z.pt").exists()


def test_evaluate_refuses_a_spatial_head_on_a_store_without_test_maps(table, tmp_path):
    path = finetune(table, tmp_path / "h.pt", head="spatial", classifier="crt")
    bare = make_store(tmp_path / "bare.h5", bound_per_class=4)
    with pytest.raises(DataError, match="--spatial-splits train,val,test,bound"):
        evaluate(path, EvalConfig(device="cpu"), store=bare, force=True)


def test_a_damaged_head_is_refused(table, tmp_path):
    path = finetune(table, tmp_path / "h.pt", head="spatial", classifier="crt")
    obj = torch.load(path, weights_only=False)
    obj["head"]["blocks"].pop(next(iter(obj["head"]["blocks"])))
    torch.save(obj, path)
    with pytest.raises(ArtifactError, match="damaged classifier"):
        load_classifier(path)


def test_fsa_on_maps_takes_each_location_from_where_the_rule_says():
    N, C, H, W = 12, 3, 3, 3
    L = H * W
    code = torch.arange(N * L, dtype=torch.float32).view(N, 1, H, W) + 1  # vector (i, l): channel 0 = i*L + l + 1
    features = torch.cat([code, torch.zeros(N, C - 1, H, W)], 1)  # (N, C, H, W)
    g = torch.Generator().manual_seed(0)
    cams = torch.rand(N, H, W, generator=g)
    labels = torch.arange(N) % 4
    bank = bank_from_tensors(labels=labels, pooled=features.mean((2, 3)), head_classes=[0, 1], tail_classes=[2, 3],
                             confusing=[[0], [1]], num_classes=4, features=features, cams=cams)
    bank = map_bank(bank, (H, W))
    aug = MapFeatureSpaceAugmenter(bank, AugmentConfig(batch_size=16, na=1))
    d = aug.draw(torch.Generator().manual_seed(1))
    nt, na = aug.nt, 1
    maps = d["features"]  # (B, C, H, W)
    assert maps.shape == (16, C, H, W) and d["labels"].shape == (16,)
    ids = maps[:, 0].reshape(16, L) - 1  # (B, L) i*L + l of each location's vector
    assert torch.equal(ids[:nt], (d["tail"][:, None] * L + torch.arange(L)).float())  # real tail maps
    owner = torch.arange(nt).repeat_interleave(na)
    source = torch.where(d["keep"], d["tail"][owner][:, None], d["confusing"][:, None])  # (A, L)
    assert torch.equal(ids[nt:nt + nt * na], (source * L + d["location"]).float())
    assert torch.equal(d["location"][d["keep"]], torch.arange(L).expand(nt * na, L)[d["keep"]])  # kept in place
    specific = cams.view(N, L)[d["tail"][owner]] > 0.5
    assert bool((d["keep"] <= specific | ~specific.any(1, keepdim=True)).all())  # only specific ones kept
    assert torch.equal(ids[nt + nt * na:], (d["head"][:, None] * L + torch.arange(L)).float())  # head maps
    assert torch.equal(d["labels"][nt:nt + nt * na], labels[d["tail"]][owner])


def test_gap_closed_by_hand():
    assert gap_closed(0.85, 0.80, 0.90) == pytest.approx(0.5)
    assert gap_closed(0.80, 0.80, 0.90) == 0.0
    assert gap_closed(0.85, 0.90, 0.90) is None and gap_closed(None, 0.8, 0.9) is None


def _result(method, balanced, bound=None):
    groups = {g: {"accuracy": balanced} for g in ("many", "medium", "few")}
    return {"method": method, "balanced_accuracy": balanced, "top1": balanced, "splits": groups, "fsa": None,
            "store": {"path": "s.h5"}, "on": "test", "options": {}, "source": {"path": f"{method}.json"},
            "tau": None, "bound": bound}


def test_compare_shows_classifier_gap_and_gap_closed_by_hand():
    p1 = _result("phase1", 0.78)
    crt = _result("crt", 0.83, {"classifier_gap_closed": gap_closed(0.83, 0.78, 0.834),
                                "phase1_balanced_accuracy": 0.78})
    spatial = _result("spatial-crt", 0.852)  # Phase I from the phase1 row
    rows = compare_rows([p1, crt, spatial], ceiling=0.935)
    assert rows[1].values["clf_gap"] == pytest.approx(0.05 / 0.054)
    assert rows[1].values["gap"] == pytest.approx(0.05 / 0.155)
    assert rows[2].values["gap"] == pytest.approx(0.072 / 0.155) and rows[2].values["clf_gap"] is None
    assert rows[0].values["gap"] == 0.0
    text = render(rows, "markdown")
    assert text.splitlines()[0].endswith("| classifier gap closed | gap closed |")
    assert "93 %" in text and "46 %" in text and "32 %" in text
    assert "gap closed" not in render(compare_rows([p1, spatial]), "markdown")  # no bound, no ceiling


def test_evaluate_bound_section_matches_the_separate_evaluations(table, tmp_path):
    clf = finetune(table, tmp_path / "crt.pt", classifier="crt", head="linear")
    bound = finetune(table, tmp_path / "bound.pt", classifier="crt", head="linear", train_on="bound")
    result = evaluate(clf, EvalConfig(device="cpu"), bound=bound).result
    b = evaluate(bound, EvalConfig(device="cpu")).result["balanced_accuracy"]
    p = evaluate(load_table(table)["lineage"]["parents"]["store"]["path"], EvalConfig(device="cpu")).result
    section = result["bound"]
    assert section["balanced_accuracy"] == pytest.approx(b)
    assert section["phase1_balanced_accuracy"] == pytest.approx(p["balanced_accuracy"])
    expected = None if b <= p["balanced_accuracy"] else \
        (result["balanced_accuracy"] - p["balanced_accuracy"]) / (b - p["balanced_accuracy"])
    assert section["classifier_gap_closed"] == (pytest.approx(expected) if expected is not None else None)
    with pytest.raises(ConfigError, match="--train-on bound"):
        evaluate(clf, EvalConfig(device="cpu"), bound=clf)
    spatial_bound = finetune(table, tmp_path / "sb.pt", classifier="crt", head="spatial", train_on="bound")
    with pytest.raises(ConfigError, match="--head linear --train-on bound"):
        evaluate(clf, EvalConfig(device="cpu"), bound=spatial_bound)
    np.testing.assert_equal(section["path"], str(bound.resolve()))


def test_a_spatial_head_option_with_the_linear_head_is_refused():
    for option in ({"head_depth": 1}, {"head_width": 64}, {"head_block": "separable"}, {"head_kernel": 5}):
        with pytest.raises(ConfigError, match="--head spatial"):
            FinetuneConfig.from_options({"classifier": "crt"} | option).validate()
    FinetuneConfig.from_options({"classifier": "crt", "head": "spatial", "head_depth": 1}).validate()
