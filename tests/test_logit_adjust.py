"""``logit-adjust`` against a hand computation of Menon et al.'s Eq. 9, and tau chosen on val."""

from __future__ import annotations

import numpy as np
import torch
from typer.testing import CliRunner

from ltkit.classifiers import load_classifier
from ltkit.cli import app
from ltkit.store import open_store
from storefixtures import make_store


def test_post_hoc_logits_are_the_phase1_logits_minus_tau_log_prior(tmp_path):
    store = make_store(tmp_path / "s.h5")
    out = tmp_path / "la.pt"
    done = CliRunner().invoke(app, ["augment-finetune", str(store), "--classifier", "logit-adjust",
                                    "--method-option", "tau=1.5", "--out", str(out), "--quiet"])
    assert done.exit_code == 0, done.stderr
    clf, meta = load_classifier(out)
    with open_store(store) as st:
        x = torch.from_numpy(st.read("test", "pooled"))
        w, b = (torch.from_numpy(v) for v in (st.classifier()["weight"], st.classifier()["bias"]))
        counts = np.asarray(st.train_counts, dtype=np.float64)
    by_hand = x @ w.T + b - 1.5 * torch.from_numpy(np.log(counts / counts.sum())).float()  # (N, K)
    assert torch.allclose(clf(x), by_hand, atol=1e-4)
    assert meta["options"]["method_options"] == {"tau": 1.5}


def test_tau_auto_is_the_best_of_the_grid_on_validation(tmp_path):
    store = make_store(tmp_path / "s.h5")
    out = tmp_path / "la.pt"
    done = CliRunner().invoke(app, ["augment-finetune", str(store), "--classifier", "logit-adjust",
                                    "--out", str(out), "--quiet"])
    assert done.exit_code == 0, done.stderr
    _, meta = load_classifier(out)
    curve = meta["history"]
    assert [row["tau"] for row in curve][:3] == [0.0, 0.1, 0.2] and len(curve) == 21
    best = max(row["val_acc"] for row in curve)
    chosen = meta["options"]["method_options"]["tau"]
    assert chosen == min(row["tau"] for row in curve if row["val_acc"] == best)  # ties: the smallest tau
