"""augment-finetune: the augment x classifier matrix, each classifier, seeds, streaming, the CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from ltkit.augment import AUGMENTERS, AUTO_FIXED
from ltkit.augment.bank import load_bank
from ltkit.classifiers import TAU_GRID, Classifier, load_classifier
from ltkit.cli import app
from ltkit.confusing import ConfusingConfig, build_table, load_table
from ltkit.errors import ArtifactError, ConfigError
from ltkit.finetune import (
    FinetuneConfig,
    accuracy_on,
    augment_finetune,
    check_combination,
    cpu_threads,
    finetune_classifier,
    margin_logits,
    split_features,
    sweep_on_val,
    val_accuracy,
)
from ltkit.methods import CLASSIFIERS
from ltkit.store import open_store
from storefixtures import make_store

FAST = dict(iterations=20, batch_size=32, device="cpu")  # Na = 3 -> Nt = 4


def Config(**options) -> FinetuneConfig:
    """A config from flat option names (batch_size, tau_s, device, ... as the artifact records them)."""
    return FinetuneConfig.from_options(options)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    store = make_store(tmp_path_factory.mktemp("ft") / "features.h5", views=2)
    return build_table(store, ConfusingConfig(head_ratio=0.8))


def run_cli(*args: str, stdin: str | None = None):
    return CliRunner().invoke(app, list(args), input=stdin)


def allowed(augment: str, classifier: str) -> bool:
    """The documented matrix: a training-free method takes no batches."""
    if not CLASSIFIERS.get(classifier).trains:
        return augment == "none"
    if CLASSIFIERS.get(classifier).augments is not None:  # re-balances through its loss: instance batches
        return augment in CLASSIFIERS.get(classifier).augments
    if augment == "cloud":
        return classifier in ("linear", "crt")
    return True


@pytest.mark.parametrize("augment", AUGMENTERS.names())
@pytest.mark.parametrize("classifier", CLASSIFIERS.names())
def test_augment_classifier_matrix(augment, classifier):
    if allowed(augment, classifier):
        check_combination(augment, classifier, "linear")
    else:
        with pytest.raises(ConfigError, match=f"--augment {augment}|--classifier {classifier}"):
            check_combination(augment, classifier, "linear")


def test_rescaling_a_cosine_phase1_head_is_refused():
    for classifier in ("lws", "tau-norm"):
        with pytest.raises(ConfigError, match="linear Phase-I"):
            check_combination("none", classifier, "cosine")
    check_combination("fsa", "crt", "cosine")


def test_fsa_default_run_writes_a_classifier_with_lineage(table_path):
    out = augment_finetune(table_path, Config(**FAST, eval_every=10))
    assert out.name == "features.fsa.pt" and out.parent == table_path.parent
    clf, meta = load_classifier(out)
    opts = meta["options"]  # fsa's auto options may keep its off point: the same batches, no augmentation
    assert clf.kind == "linear" and meta["method"] == opts["augment"] in ("fsa", "none")
    assert opts["request"]["augment"] == "auto" and len(opts["auto_choice"]) == 8
    parents = meta["lineage"]["parents"]
    assert set(parents) == {"store", "table"} and parents["table"]["path"] == str(table_path.resolve())
    assert opts["lr"] == 0.001 and opts["schedule"] == "constant"
    assert opts["na"] == 3 and opts["iterations"] == 20 and 0 <= opts["val_acc"] <= 1
    assert [row["iteration"] for row in meta["history"]] == [10, 20]
    assert all("val_acc" in row and "tail_acc" in row for row in meta["history"])
    with open_store(load_table(table_path)["lineage"]["parents"]["store"]["path"]) as st:
        assert val_accuracy(st, clf) == pytest.approx(opts["val_acc"])
        phase1 = Classifier.from_store(st)
    assert not torch.equal(clf.weight, phase1.weight)  # it did train


@pytest.mark.parametrize("augment,classifier", [("fsa", "linear"), ("fsa", "crt"), ("cloud", "linear"),
                                                ("class-balanced", "lws")])
def test_same_seed_same_classifier_bit_for_bit(table_path, tmp_path, augment, classifier):
    cfg = Config(augment=augment, classifier=classifier, **FAST)
    a, _ = load_classifier(augment_finetune(table_path, cfg, out=tmp_path / "a.pt"))
    b, _ = load_classifier(augment_finetune(table_path, cfg, out=tmp_path / "b.pt"))
    c, _ = load_classifier(augment_finetune(table_path, dataclasses.replace(cfg, seed=1),
                                            out=tmp_path / "c.pt"))
    for name, value in a.to_state().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b.to_state()[name]), name
    assert not torch.equal(a.to_state()["weight" if classifier != "lws" else "class_scale"],
                           c.to_state()["weight" if classifier != "lws" else "class_scale"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_seed_same_classifier_on_cuda(table_path, tmp_path):
    cfg = Config(**(FAST | {"device": "cuda"}))
    a, _ = load_classifier(augment_finetune(table_path, cfg, out=tmp_path / "a.pt"))
    b, _ = load_classifier(augment_finetune(table_path, cfg, out=tmp_path / "b.pt"))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


@pytest.mark.parametrize("scratch", [True, False])  # a mapped scratch copy, or reads from the store
def test_streamed_maps_give_the_same_classifier(table_path, tmp_path, scratch):
    table = load_table(table_path)
    with open_store(table["lineage"]["parents"]["store"]["path"]) as st:
        phase1 = Classifier.from_store(st)
        resident = load_bank(st, table, device=torch.device("cpu"), spatial=True)
        streamed = load_bank(st, table, device=torch.device("cpu"), spatial=True, resident_bytes=0,
                             scratch=scratch, scratch_dir=tmp_path)
        kind = "MappedSpatial" if scratch else "StoreSpatial"
        assert type(streamed.spatial).__name__ == kind and resident.num_views == 3
        assert not list(tmp_path.iterdir())  # the scratch file is unlinked once mapped
        cfg = Config(**FAST).resolved(st.rows("train"), 3).replace(**AUTO_FIXED)
        a, _ = finetune_classifier(resident, phase1, cfg)
        b, _ = finetune_classifier(streamed, phase1, cfg)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_no_room_for_the_scratch_copy_reads_the_store(table_path, monkeypatch):
    import ltkit.augment.bank as bank_module

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bank_module.MappedSpatial, "__init__", full)
    table = load_table(table_path)
    with open_store(table["lineage"]["parents"]["store"]["path"]) as st:
        bank = load_bank(st, table, device=torch.device("cpu"), spatial=True, resident_bytes=0)
    assert type(bank.spatial).__name__ == "StoreSpatial"


def test_bank_holds_the_store_rows_view_by_view(table_path):
    table = load_table(table_path)
    with open_store(table["lineage"]["parents"]["store"]["path"]) as st:
        bank = load_bank(st, table, device=torch.device("cpu"), spatial=True)
        streamed = load_bank(st, table, device=torch.device("cpu"), spatial=True, resident_bytes=0)
        n = st.rows("train")
        sample, view = st.read("train/views", "sample"), st.read("train/views", "view")
        row = int(np.flatnonzero((sample == 7) & (view == 1))[0])  # image 7, stored view 1
        assert torch.equal(bank.pooled[7, 0], torch.from_numpy(st.read("train", "pooled")[7]))
        assert torch.equal(bank.pooled[7, 2], torch.from_numpy(st.read("train/views", "pooled")[row]))
        cams = st.read("train/views", "cams")[row].reshape(-1).astype(np.float32)
        assert torch.equal(bank.cams[7, 2], torch.from_numpy(cams))
        maps = st.read("train/views", "features")[row].reshape(8, -1).T.astype(np.float32)  # (L, C)
        image, v, loc = torch.full((16,), 7), torch.full((16,), 2), torch.arange(16)
        assert torch.equal(bank.spatial.vectors(image, v, loc), torch.from_numpy(maps))
        assert torch.equal(streamed.spatial.vectors(image, v, loc), torch.from_numpy(maps))
        assert torch.equal(bank.nonzero[7, 2], torch.from_numpy(maps).ne(0).any(1))
        assert bank.labels.numel() == n and bank.num_views == 3
        no_views = load_bank(st, table, device=torch.device("cpu"), spatial=False, use_views=False)
        assert no_views.num_views == 1 and no_views.spatial is None


def test_cpu_threads_are_restored():
    before = torch.get_num_threads()
    with cpu_threads(torch.device("cpu"), before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_threshold_sweep_on_one_bank(table_path):
    table = load_table(table_path)
    with open_store(table["lineage"]["parents"]["store"]["path"]) as st:
        phase1 = Classifier.from_store(st)
        bank = load_bank(st, table, device=torch.device("cpu"), spatial=True)
        val = split_features(st, "val")
        cfg = Config(**FAST).resolved(st.rows("train"), 3)
        rows = sweep_on_val(bank, phase1, cfg, val, tau_s=[0.3, 0.7], tau_g=[0.4])
        single, _ = finetune_classifier(bank, phase1, cfg.replace(**AUTO_FIXED | {"tau_s": 0.7, "tau_g": 0.4}))
    assert sorted((r["tau_s"], r["tau_g"]) for r in rows) == [(0.3, 0.4), (0.7, 0.4)]
    assert rows[0]["val_acc"] >= rows[1]["val_acc"]
    assert next(r for r in rows if r["tau_s"] == 0.7)["val_acc"] == accuracy_on(single, *val)
    with pytest.raises(ConfigError, match="cannot sweep"):
        sweep_on_val(bank, phase1, cfg, val, tau=[1.0], colour=[1])


def test_crt_lws_cloud_kinds_and_what_they_train(table_path):
    store = load_table(table_path)["lineage"]["parents"]["store"]["path"]
    with open_store(store) as st:
        phase1 = Classifier.from_store(st)
    crt, meta = load_classifier(augment_finetune(table_path, Config(classifier="crt", **FAST)))
    assert crt.kind == "linear" and meta["options"]["augment"] == "class-balanced"
    assert meta["options"]["lr"] == 0.2 and meta["options"]["schedule"] == "cosine"
    lws, _ = load_classifier(augment_finetune(table_path, Config(classifier="lws", **FAST)))
    assert lws.kind == "lws" and torch.equal(lws.weight, phase1.weight)  # only the scales train
    assert not torch.equal(lws.class_scale, torch.ones(6))
    cloud, meta = load_classifier(augment_finetune(table_path, Config(augment="cloud", **FAST)))
    assert cloud.kind == "cosine" and cloud.scale == 16.0 and meta["method"] == "cloud"


def test_crt_default_schedule_is_ten_epochs_equivalent():
    cfg = Config(classifier="crt").resolved(num_train=1000, nf=3)
    assert (cfg.batches.batch_size, cfg.iterations, cfg.lr, cfg.augment) == (512, 20, 0.2, "class-balanced")
    cfg = Config().resolved(num_train=1000, nf=2)
    # Na = 2: 128 holds no whole 2*Nt*(1+Na) batch, so the default is the nearest that does
    assert (cfg.batches.batch_size, cfg.iterations, cfg.lr, cfg.batches.na, cfg.augment) == (126, 6400, 0.001, 2, "fsa")
    cfg = Config().resolved(num_train=1000, nf=3)
    assert (cfg.batches.batch_size, cfg.batches.na) == (128, 3)  # the paper's batch, Na = Nf = 3


def test_margin_logits_widen_only_the_target_angle():
    clf = Classifier("cosine", torch.eye(3), None, scale=10.0)
    x = torch.tensor([[1.0, 1.0, 0.0]])
    plain = clf(x).detach()
    wide = margin_logits(clf, x, torch.tensor([0]), 0.3).detach()
    assert wide[0, 0] == pytest.approx(10.0 * np.cos(np.pi / 4 + 0.3), rel=1e-5)
    assert torch.allclose(wide[0, 1:], plain[0, 1:])


def test_tau_norm_auto_and_fixed(table_path):
    clf, meta = load_classifier(augment_finetune(table_path, Config(classifier="tau-norm",
                                                                            device="cpu")))
    assert meta["options"]["tau"] in TAU_GRID and meta["options"]["augment"] == "none"
    best = max(row["val_acc"] for row in meta["history"])
    assert meta["options"]["val_acc"] == pytest.approx(best) and len(meta["history"]) == len(TAU_GRID)
    store = load_table(table_path)["lineage"]["parents"]["store"]["path"]
    with open_store(store) as st:
        w = torch.from_numpy(st.classifier()["weight"])
    fixed, _ = load_classifier(augment_finetune(table_path, Config(classifier="tau-norm", tau=1.0,
                                                                           device="cpu"), force=True))
    assert torch.allclose(fixed.weight, w / w.norm(dim=1, keepdim=True)) and fixed.bias is None


def test_tau_auto_needs_a_validation_split(tmp_path):
    store = make_store(tmp_path / "noval.h5", val_per_class=0)
    with pytest.raises(ConfigError, match="validation split"):
        augment_finetune(store, Config(classifier="tau-norm", device="cpu"))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_ncm_holds_the_class_means(tmp_path, metric):
    store = make_store(tmp_path / "s.h5")
    clf, _ = load_classifier(augment_finetune(store, Config(classifier="ncm", ncm_metric=metric,
                                                                    device="cpu")))
    with open_store(store) as st:
        x = torch.from_numpy(st.read("train", "pooled")).double()
        y = torch.from_numpy(st.read("train", "labels"))
    x = F.normalize(x, dim=1) if metric == "cosine" else x
    means = torch.stack([x[y == k].mean(0) for k in range(6)]).float()
    assert clf.kind == "ncm" and clf.metric == metric and torch.allclose(clf.weight, means, atol=1e-6)
    assert not (tmp_path / "s.table.pt").exists()  # training-free: no table needed


def test_a_cosine_phase1_head_stays_cosine(tmp_path):
    store = make_store(tmp_path / "cos.h5", head="cosine")
    clf, _ = load_classifier(augment_finetune(store, Config(**FAST)))
    assert clf.kind == "cosine" and clf.scale == 16.0
    with pytest.raises(ConfigError, match="linear Phase-I"):
        augment_finetune(store, Config(classifier="lws", **FAST), force=True)


def test_a_changed_store_is_refused_unless_given(tmp_path):
    store = make_store(tmp_path / "s.h5")
    table = build_table(store, ConfusingConfig(head_ratio=0.8))
    moved = tmp_path / "copy.h5"
    moved.write_bytes(store.read_bytes())
    with open(store, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="changed"):
        augment_finetune(table, Config(**FAST))
    out = augment_finetune(table, Config(**FAST), store=moved)
    assert load_classifier(out)[1]["lineage"]["parents"]["store"]["path"] == str(moved.resolve())
    with pytest.raises(ConfigError, match="already a store"):
        augment_finetune(moved, Config(**FAST), store=moved)


def test_cli_from_a_store_builds_the_table_and_says_so(tmp_path):
    store = make_store(tmp_path / "feat.h5")
    result = run_cli("augment-finetune", "-", "--iterations", "60", "--batch-size", "32",
                     "--device", "cpu", stdin=f"{store}\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "feat.fsa.pt")
    assert "building one with the defaults" in result.stderr and (tmp_path / "feat.table.pt").exists()
    assert "loss" in result.stderr and "tail" in result.stderr
    again = run_cli("augment-finetune", str(store), "--augment", "none", "--iterations", "5",
                    "--device", "cpu")
    assert again.exit_code == 0 and "using the existing table" in again.stderr
    assert again.stdout.strip() == str(tmp_path / "feat.none.pt")


@pytest.mark.parametrize("args,message", [
    (["--batch-size", "100"], "does not fit a balanced batch"),
    (["--classifier", "ncm", "--augment", "fsa"], "needs no training batches"),
    (["--augment", "cloud", "--classifier", "lws"], "cosine classifier"),
    (["--augment", "mixup"], "unknown augmenter 'mixup'; valid names: class-balanced, cloud, fsa, h2t, instance, none"),
    (["--tau-s", "1.0"], "--tau-s must lie strictly between 0 and 1"),
])
def test_cli_bad_options_are_one_clear_line(table_path, tmp_path, args, message):
    result = run_cli("augment-finetune", str(table_path), "--device", "cpu", "--iterations", "2",
                     "--out", str(tmp_path / "x.pt"), *args)
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("classifier", ["tau-norm", "ncm"])
def test_finetune_classifier_refuses_what_it_does_not_train(classifier):
    """tau-norm and ncm are made by `fit`; training them on batches would silently be `none`."""
    from ltkit.finetune import finetune_classifier

    cfg = Config(classifier=classifier, augment="none")
    with pytest.raises(ConfigError, match="not trained on batches"):
        finetune_classifier(None, None, cfg)


def test_the_default_batch_size_fits_any_number_of_confusing_classes(tmp_path):
    """A table of --top 5 makes Na = 5: the default 128 holds no whole 2*Nt*(1+Na) batch, so
    the nearest that does (132) is used and said; a --batch-size given is never changed."""
    from ltkit.augment import nearest_balanced_batch

    assert [nearest_balanced_batch(128, na) for na in (1, 3, 5, 7, 9)] == [128, 128, 132, 128, 120]
    assert nearest_balanced_batch(3, 5) == 12  # never below one tail image
    store = make_store(tmp_path / "f.h5")
    table = build_table(store, ConfusingConfig(head_ratio=0.8, top=5))
    result = run_cli("augment-finetune", str(table), "--iterations", "3", "--device", "cpu",
                     "--out", str(tmp_path / "c.pt"))
    assert result.exit_code == 0, result.stderr
    assert "batch size 132" in result.stderr
    _, meta = load_classifier(tmp_path / "c.pt")
    assert meta["options"]["batch_size"] == 132 and meta["options"]["na"] == 5
    given = run_cli("augment-finetune", str(table), "--iterations", "3", "--device", "cpu",
                    "--batch-size", "128", "--out", str(tmp_path / "d.pt"))
    assert given.exit_code == 2 and "--batch-size 128 does not fit" in given.stderr


def test_fsa_refuses_a_store_of_1x1_maps(tmp_path):
    """One location: FSA would relabel a confusing image's own feature as the tail class."""
    store = make_store(tmp_path / "f.h5", height=1, width=1)
    table = build_table(store, ConfusingConfig(head_ratio=0.8))
    result = run_cli("augment-finetune", str(table), "--iterations", "3", "--batch-size", "32",
                     "--device", "cpu", "--out", str(tmp_path / "c.pt"))
    assert result.exit_code == 2 and "1x1" in result.stderr and not (tmp_path / "c.pt").exists()
    other = run_cli("augment-finetune", str(table), "--augment", "none", "--iterations", "3",
                    "--batch-size", "32", "--device", "cpu", "--out", str(tmp_path / "n.pt"))
    assert other.exit_code == 0, other.stderr


def test_eval_every_without_a_validation_split_warns(tmp_path):
    store = make_store(tmp_path / "f.h5", val_per_class=0)
    table = build_table(store, ConfusingConfig(head_ratio=0.8))
    result = run_cli("augment-finetune", str(table), "--iterations", "4", "--batch-size", "32",
                     "--eval-every", "2", "--device", "cpu", "--out", str(tmp_path / "c.pt"))
    assert result.exit_code == 0, result.stderr
    assert "--eval-every 2" in result.stderr and "no validation split" in result.stderr


# ---- the registry of methods, and artifacts of before ------------------------------------------

@pytest.mark.parametrize("classifier", CLASSIFIERS.names())
def test_every_registered_method_makes_an_artifact_evaluate_reads(table_path, tmp_path, classifier):
    from ltkit.evaluate import EvalConfig, evaluate
    from ltkit.methods import get_method

    method = get_method(classifier)
    out = augment_finetune(table_path, Config(classifier=classifier, **FAST), out=tmp_path / "c.pt")
    clf, meta = load_classifier(out)
    off = {row["augment"] for row in meta["options"].get("auto_choice", []) if "augment" in row}  # fsa: none
    assert meta["options"]["augment"] in {method.default_augment} | off and meta["options"]["run"]["device"] == "cpu"
    assert meta["method"] == method.method_name(meta["options"]["augment"])
    assert meta["history"] != [] or not method.trains  # a training-free one may keep a validation curve
    assert evaluate(out, EvalConfig(device="cpu")).result["method"] == meta["method"]


def test_a_new_method_is_one_registered_class(table_path, tmp_path, monkeypatch):
    """What a new module of ltkit/methods does: subclass Method, register a name, declare its
    own options; the stage, the CLI (--classifier, --method-option) and evaluate take it."""
    from ltkit.methods import FitInputs, Method

    class PriorShift(Method):  # the Phase-I classifier with its logits shifted by a log prior
        name, trains, default_augment, options = "prior-shift", False, "none", {"strength": 1.0}

        def method_name(self, augment):
            return self.name

        def check_options(self, options):
            if options["strength"] < 0:
                raise ConfigError("--method-option strength must be >= 0")

        def make(self, inputs: FitInputs):
            counts = torch.as_tensor(inputs.store.train_counts, dtype=torch.float32)
            shift = inputs.cfg.method_options["strength"] * counts.log()
            return Classifier("linear", inputs.phase1.weight, inputs.phase1.bias - shift), [], inputs.cfg

    monkeypatch.setitem(CLASSIFIERS._items, "prior-shift", PriorShift)
    out = tmp_path / "p.pt"
    result = run_cli("augment-finetune", str(table_path), "--classifier", "prior-shift", "--method-option",
                     "strength=0.5", "--device", "cpu", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    _, meta = load_classifier(out)
    assert meta["method"] == "prior-shift" and meta["options"]["method_options"] == {"strength": 0.5}
    again = run_cli("augment-finetune", str(table_path), "--classifier", "prior-shift", "--method-option",
                    "strength=0.5", "--device", "cpu", "--out", str(out))
    assert again.exit_code == 0 and "reusing" in again.stderr
    bad = run_cli("augment-finetune", str(table_path), "--classifier", "prior-shift", "--method-option",
                  "strength=-1", "--device", "cpu", "--out", str(tmp_path / "q.pt"))
    assert bad.exit_code == 2 and "strength must be >= 0" in bad.stderr
    assert run_cli("evaluate", str(out), "--device", "cpu", "-q").exit_code == 0


def test_an_artifact_of_before_is_recognised_on_a_rerun(table_path, tmp_path):
    """Classifiers written before the options were nested kept every option flat (device,
    threads, ... among them) and recorded no store identity: a rerun with the same options
    reuses them, and compare shows no device column."""
    from ltkit.compare import flat_options
    from ltkit.runoptions import RUN_FIELDS

    out = augment_finetune(table_path, Config(**FAST), out=tmp_path / "c.pt")
    obj = torch.load(out, weights_only=True)
    run_options = obj["options"].pop("run")
    obj["options"] |= run_options  # flat, as before
    del obj["lineage"]["store_identity"]
    torch.save(obj, out)
    again = run_cli("augment-finetune", str(table_path), "--iterations", "20", "--batch-size", "32",
                    "--device", "cpu", "--threads", "2", "--out", str(out))
    assert again.exit_code == 0 and "reusing" in again.stderr, again.stderr
    shown = flat_options({"options": obj["options"]})
    assert not set(shown) & RUN_FIELDS and shown["tau_s"] == "0.5"
    assert Config(**obj["options"]["request"]).to_options() == obj["options"]["request"]


def test_flat_options_round_trip():
    cfg = Config(augment="fsa", tau_s=0.7, views=False, batch_size=64, device="cpu", eval_every=5)
    assert cfg.batches.tau_s == 0.7 and cfg.batches.use_views is False and cfg.run.eval_every == 5
    assert Config(**cfg.to_options(), device="cpu", eval_every=5) == cfg
    assert cfg.replace(tau_g=0.2).batches.tau_g == 0.2 and cfg.replace(tau_g=0.2).run.device == "cpu"
    with pytest.raises(ConfigError, match="colour: not a fine-tuning option"):
        Config(colour=1)


def test_a_new_method_may_bring_its_own_head_kind(table_path, tmp_path, monkeypatch):
    """A method whose classifier scores in a new way registers that kind in its own module too:
    the artifact saves and loads it, evaluate scores with it."""
    from ltkit.classifiers import HEAD_KINDS, HeadKind
    from ltkit.evaluate import EvalConfig, evaluate
    from ltkit.methods import FitInputs, Method

    def offset(clf, x):  # linear logits minus a learned-free per-class offset held in class_scale
        return x @ clf.weight.T + clf.bias - clf.class_scale

    class Offset(Method):
        name, trains, default_augment = "offset", False, "none"

        def method_name(self, augment):
            return self.name

        def make(self, inputs: FitInputs):
            p1 = inputs.phase1
            return Classifier("offset", p1.weight, p1.bias, class_scale=torch.ones(p1.num_classes)), [], inputs.cfg

    monkeypatch.setitem(HEAD_KINDS._items, "offset", HeadKind(offset, needs=("class_scale",)))
    monkeypatch.setitem(CLASSIFIERS._items, "offset", Offset)
    out = augment_finetune(table_path, Config(classifier="offset", device="cpu"), out=tmp_path / "o.pt")
    clf, _ = load_classifier(out)
    assert clf.kind == "offset" and torch.equal(clf.class_scale, torch.ones(6))
    assert evaluate(out, EvalConfig(device="cpu")).result["classifier"]["kind"] == "offset"
    state = torch.load(out, weights_only=True)
    state["classifier"]["class_scale"] = None
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ArtifactError, match="offset classifier without its class_scale"):
        load_classifier(tmp_path / "bad.pt")
