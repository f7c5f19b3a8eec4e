"""Classifiers on pooled features, and the classifier artifact.

Every Phase-II result maps pooled features ``(B, C)`` to logits ``(B, K)``:

- ``linear``: ``x @ W.T + b`` (the Phase-I FC, fine-tuned or re-trained; tau-normalisation
  yields a linear classifier with ``W / ||W||^tau`` and no bias);
- ``cosine``: ``scale * normalize(x) @ normalize(W).T`` (LDAM's head, the feature cloud's);
- ``lws``: ``class_scale * (x @ W.T + b)``, one learned scale per class (Kang et al.);
- ``ncm``: nearest class mean, ``W`` holds the class means; cosine similarity, or the
  negative squared L2 distance.

How a kind scores is registered (`HEAD_KINDS`, `register_kind`): a Phase-II method with a
head of its own (`ltkit.methods`) registers its kind in its own module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ltkit import choices
from ltkit.artifacts import load_torch_artifact, save_torch_artifact
from ltkit.errors import ArtifactError, ConfigError
from ltkit.lineage import lineage_problem
from ltkit.metrics import balanced_accuracy, per_class_accuracy
from ltkit.registry import Registry

FORMAT = "ltkit-classifier"
FORMAT_VERSION = 1
HEAD_FORMAT_VERSION = 2  # artifacts of a head on maps (a ``head`` entry): older ltkit refuses them
TAU_GRID = tuple(round(0.1 * i, 1) for i in range(21))  # tau-normalisation exponents: 0.0 .. 2.0
NCM_METRICS = choices.NCM_METRICS
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass(frozen=True)
class HeadKind:
    """How a classifier kind scores, and the state it cannot do without."""

    logits: Callable[[Classifier, torch.Tensor], torch.Tensor]  # (clf, pooled (B, C) float32) -> (B, K)
    needs: tuple[str, ...] = ()  # of "scale", "class_scale": entries its state must hold
    aux: tuple[tuple[str, str], ...] = ()  # its own tensors (clf.aux): (name, shape: "K", "C" or "1")


HEAD_KINDS: Registry[HeadKind] = Registry("classifier kind", declared=choices.HEAD_KINDS)


def register_kind(name: str, *, needs: tuple[str, ...] = (), aux: tuple[tuple[str, str], ...] = ()):
    """Decorator: ``fn(clf, x) -> logits`` scores the classifiers of kind ``name``; ``aux``: the
    kind's own tensors, (name, shape) with shape "K" (one per class), "C" (one per channel) or "1"."""
    def decorator(fn):
        HEAD_KINDS.register(name)(HeadKind(fn, needs, aux))
        return fn
    return decorator


class Classifier(nn.Module):
    def __init__(self, kind: str, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                 scale: float | None = None, class_scale: torch.Tensor | None = None,
                 metric: str = "cosine", aux: dict[str, torch.Tensor] | None = None):
        super().__init__()
        needs = HEAD_KINDS.get(kind).needs  # ConfigError listing the kinds when unknown
        if kind == "ncm" and metric not in NCM_METRICS:
            raise ConfigError(f"unknown NCM metric {metric!r}; valid: {', '.join(NCM_METRICS)}")
        self.kind, self.metric = kind, metric
        self.weight = nn.Parameter(weight.detach().clone().float())  # (K, C)
        self.bias = nn.Parameter(bias.detach().clone().float()) if bias is not None else None  # (K,)
        self.scale = float(scale) if scale is not None else None
        if "class_scale" in needs:
            init = class_scale if class_scale is not None else torch.ones(weight.shape[0])
            self.class_scale = nn.Parameter(init.detach().clone().float())  # (K,)
        else:
            self.class_scale = None
        self.aux = nn.ParameterDict({k: nn.Parameter(v.detach().clone().float()) for k, v in (aux or {}).items()})

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return HEAD_KINDS.get(self.kind).logits(self, pooled.float())  # (B, C) -> (B, K)

    def tau_normalized(self, tau: float) -> Classifier:
        """Kang et al.'s tau-normalisation: ``W_k / ||W_k||^tau``, bias dropped (linear kinds)."""
        if self.kind not in ("linear", "lws"):
            raise ConfigError(f"tau-normalisation applies to a linear classifier, not {self.kind!r}")
        weight = self.weight.detach()
        if self.kind == "lws":
            weight = weight * self.class_scale.detach()[:, None]
        norms = weight.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (K, 1)
        return Classifier("linear", weight / norms.pow(tau), None)

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "metric": self.metric, "scale": self.scale,
                "weight": self.weight.detach().cpu(),
                "bias": None if self.bias is None else self.bias.detach().cpu(),
                "class_scale": None if self.class_scale is None else self.class_scale.detach().cpu(),
                **({"aux": {k: v.detach().cpu() for k, v in self.aux.items()}} if len(self.aux) else {})}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Classifier:
        return cls(state["kind"], state["weight"], state.get("bias"), scale=state.get("scale"),
                   class_scale=state.get("class_scale"), metric=state.get("metric") or "cosine",
                   aux=state.get("aux"))

    @classmethod
    def from_store(cls, store) -> Classifier:
        """The Phase-I classifier saved in a feature store."""
        head = store.classifier()
        bias = torch.as_tensor(head["bias"]) if head.get("bias") is not None else None
        return cls(head["kind"], torch.as_tensor(head["weight"]), bias, scale=head.get("scale"))


def _affine(clf: Classifier, x: torch.Tensor) -> torch.Tensor:
    logits = x @ clf.weight.T  # (B, K)
    return logits + clf.bias if clf.bias is not None else logits


@register_kind("linear")
def _linear(clf: Classifier, x: torch.Tensor) -> torch.Tensor:
    return _affine(clf, x)


@register_kind("cosine", needs=("scale",))
def _cosine(clf: Classifier, x: torch.Tensor) -> torch.Tensor:
    return (clf.scale or 1.0) * F.normalize(x, dim=1) @ F.normalize(clf.weight, dim=1).T  # (B, K)


@register_kind("lws", needs=("class_scale",))
def _lws(clf: Classifier, x: torch.Tensor) -> torch.Tensor:
    return _affine(clf, x) * clf.class_scale  # (B, K)


@register_kind("ncm")
def _ncm(clf: Classifier, x: torch.Tensor) -> torch.Tensor:
    if clf.metric == "cosine":
        return F.normalize(x, dim=1) @ F.normalize(clf.weight, dim=1).T  # (B, K)
    return -torch.cdist(x, clf.weight).pow(2)  # (B, K)


@torch.no_grad()
def pick_tau(clf: Classifier, pooled: Iterable[torch.Tensor], labels: np.ndarray,
             grid: tuple[float, ...] = TAU_GRID) -> tuple[float | None, list[float | None]]:
    """The tau of ``grid`` whose tau-normalised ``clf`` has the best balanced accuracy on a
    validation split (ties: the smallest tau), and every tau's score. ``pooled`` yields the
    split's (B, C) features in order, so a large split is scored chunk by chunk; ``labels``
    (N,). The tau is None when no class has a validation image."""
    candidates = [clf.tau_normalized(t).eval() for t in grid]
    preds = np.zeros((len(grid), len(labels)), dtype=np.int64)  # (T, N)
    start = 0
    for x in pooled:  # a loop over chunks; every candidate scores each chunk
        for i, cand in enumerate(candidates):
            preds[i, start:start + len(x)] = cand.to(x.device)(x).argmax(1).cpu().numpy()
        start += len(x)
    scores = [balanced_accuracy(per_class_accuracy(p, labels, clf.num_classes)) for p in preds]
    if all(s is None for s in scores):
        return None, scores
    best = int(np.argmax([-1.0 if s is None else s for s in scores]))  # first maximum
    return float(grid[best]), scores


def save_classifier(path: str | Path, clf, *, method: str, lineage: dict[str, Any],
                    options: dict[str, Any], history: list[dict[str, Any]] | None = None) -> Path:
    """Write a classifier artifact; ``lineage["parents"]`` names its store (and table). A head
    on maps (`ltkit.spatial_head.SpatialHead`) keeps its final layer as ``classifier`` and
    the rest under ``head`` (format version 2)."""
    final = clf.fc if hasattr(clf, "head_state") else clf
    extra = {"format_version": HEAD_FORMAT_VERSION, "head": clf.head_state()} if final is not clf else {}
    return save_torch_artifact({"format": FORMAT, "format_version": FORMAT_VERSION,
                                "method": method, "classifier": final.to_state(),
                                "options": options, "lineage": lineage,
                                "history": history or []} | extra, path)


def load_classifier(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """A classifier artifact's classifier (a `Classifier`, or the head module of its head kind)
    and its metadata (method, options, lineage, history), validated: a damaged or doctored
    file is one `ArtifactError`, never a crash later."""
    import ltkit.methods  # noqa: F401  (registers the kinds the Phase-II methods bring, e.g. disalign)

    obj = load_torch_artifact(path, FORMAT)
    version = FORMAT_VERSION if obj.get("head") is None else HEAD_FORMAT_VERSION  # the one its content needs
    if obj.get("format_version") != version:
        raise ArtifactError(f"{path} is a classifier of format version {obj.get('format_version')!r}; "
                            f"this ltkit reads version {FORMAT_VERSION} (version {HEAD_FORMAT_VERSION} "
                            "with a head on maps)")
    problem = _state_problem(obj.get("classifier")) or lineage_problem(obj.get("lineage")) or \
        _meta_problem(obj)
    if problem:
        raise ArtifactError(f"{path} is a damaged classifier ({problem}); make it again with "
                            "ltkit augment-finetune")
    clf = Classifier.from_state(obj["classifier"])
    if obj.get("head") is not None:
        clf = _load_head(path, clf, obj["head"])
    return clf, {k: v for k, v in obj.items() if k != "classifier"}


def _load_head(path: str | Path, final: Classifier, state: Any):
    """The head module of a version-2 artifact around its final layer; ArtifactError when damaged."""
    from ltkit.heads import HEADS

    kind = state.get("kind") if isinstance(state, dict) else None
    if kind not in HEADS or HEADS.get(kind).load is None:
        raise ArtifactError(f"{path} is a damaged classifier (its head is not of a known kind); make "
                            "it again with ltkit augment-finetune")
    try:
        head = HEADS.get(kind).load(final, state)
    except (KeyError, TypeError, ValueError, RuntimeError, ConfigError) as exc:
        raise ArtifactError(f"{path} is a damaged classifier (its {kind} head does not load: "
                            f"{str(exc).splitlines()[0]}); make it again with ltkit augment-finetune") from None
    if not all(bool(torch.isfinite(t).all()) for t in head.state_dict().values() if t.is_floating_point()):
        raise ArtifactError(f"{path} is a damaged classifier (its {kind} head holds NaN or infinite "
                            "values); make it again with ltkit augment-finetune")
    return head.eval()


def _meta_problem(obj: dict[str, Any]) -> str | None:
    """What is wrong with a classifier artifact's method, options, history or recorded store
    identity, or None."""
    if not isinstance(obj.get("method"), str):
        return "its method is not a name"
    if not isinstance(obj.get("options"), dict):
        return "its options are not a record"
    identity = obj["lineage"].get("store_identity")
    if identity is not None and not (isinstance(identity, dict) and all(isinstance(k, str) for k in identity)):
        return "its store identity is not a record"
    history = obj.get("history")
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        return "its history is not a list of records"
    return None


def _state_problem(state: Any) -> str | None:
    """What is wrong with a saved classifier state, or None: kind, dtypes, shapes, finite
    values, a positive cosine scale."""
    if not isinstance(state, dict) or not isinstance(state.get("kind"), str) or state["kind"] not in HEAD_KINDS:
        return "no classifier state of a known kind"
    if state["kind"] == "ncm" and state.get("metric") not in NCM_METRICS:
        return f"its NCM metric is not one of {', '.join(NCM_METRICS)}"
    weight = state.get("weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or 0 in weight.shape:
        return "its weight is not a (classes, features) tensor"
    k = weight.shape[0]
    for name in ("bias", "class_scale"):
        value = state.get(name)
        if value is not None and (not isinstance(value, torch.Tensor) or value.shape != (k,)):
            return f"its {name} does not have one value per class"
    for need in HEAD_KINDS.get(state["kind"]).needs:
        if state.get(need) is None:
            return f"a {state['kind']} classifier without its {need}"
    aux = state.get("aux") or {}
    want = dict(HEAD_KINDS.get(state["kind"]).aux)
    sizes = {"K": k, "C": weight.shape[1], "1": 1}
    if not isinstance(aux, dict) or set(aux) != set(want) or not all(
            isinstance(aux[n], torch.Tensor) and aux[n].shape == (sizes[want[n]],) for n in want):
        return f"its own tensors are not {', '.join(want) or 'none'}, each of its shape"
    tensors = [t for t in (weight, state.get("bias"), state.get("class_scale"), *aux.values()) if t is not None]
    if not all(t.is_floating_point() for t in tensors):
        return "its weights are not floating-point numbers"
    if not all(bool(torch.isfinite(t.float()).all()) for t in tensors):  # in float32, as it computes
        return "it holds NaN or infinite values"
    scale = state.get("scale")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            return "its scale is not a number"
        if not (math.isfinite(scale) and 0 < scale < FLOAT32_MAX):
            return f"its cosine scale is {scale}, not a finite number > 0"
    return None
