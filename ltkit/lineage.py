"""Lineage: find an artifact's parent by role and check that it is still the very file.

Every artifact records its parents as ``lineage["parents"][role] = {"path", "sha256"}``
(`ltkit.artifacts.make_lineage`). `parent` reads one entry (and refuses a damaged one),
`parent_change` says how a file differs from the recorded parent, `verified_parent` does
both and hands back the path to use: the recorded one, or one given instead (``--store``,
``--table``). A store's identity (its backbone, classes and counts) is what tells a store
given instead apart from a foreign one: `store_identity`, `identity_diff`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltkit.artifacts import file_sha256
from ltkit.errors import ArtifactError


@dataclass(frozen=True)
class Parent:
    role: str             # "store", "table", ...
    path: Path            # where it was when the artifact was made
    sha256: str | None    # its content hash then (None: not recorded)


def lineage_problem(lineage: Any) -> str | None:
    """What is wrong with a saved lineage (not a dict, parents of the wrong shape), or None."""
    if not isinstance(lineage, dict) or not isinstance(lineage.get("parents", {}), dict):
        return "its lineage is not a record of parents"
    for role, entry in lineage.get("parents", {}).items():
        if not (isinstance(role, str) and isinstance(entry, dict) and isinstance(entry.get("path"), str)
                and isinstance(entry.get("sha256"), (str, type(None)))):
            return f"its lineage entry {role!r} is not a path with a hash"
    return None


def parent(lineage: Any, role: str, *, owner: str | Path) -> Parent | None:
    """The parent of ``role`` recorded in ``lineage`` (None when there is none); ArtifactError
    naming ``owner`` when the lineage is damaged."""
    problem = lineage_problem(lineage)
    if problem:
        raise ArtifactError(f"{owner} is damaged ({problem}); make it again")
    entry = lineage.get("parents", {}).get(role)
    return None if entry is None else Parent(role, Path(entry["path"]), entry.get("sha256"))


def parent_change(recorded: Parent, path: str | Path | None = None, *, same_path: bool = False) -> str | None:
    """How the file at ``path`` (default: the recorded path) differs from the recorded parent:
    gone, another path (with ``same_path``), another content; None when it is the very file."""
    path = Path(path if path is not None else recorded.path)
    if not path.is_file():
        return f"its {recorded.role} {path} is gone"
    if same_path and path.resolve() != recorded.path.resolve():
        return f"was built from another {recorded.role} ({recorded.path})"
    if recorded.sha256 and file_sha256(path) != recorded.sha256:
        return f"its {recorded.role} {path} changed since (hash differs)"
    return None


def verified_parent(lineage: Any, role: str, *, owner: str | Path, given: str | Path | None = None,
                    option: str | None = None) -> Path | None:
    """The path of the parent ``role`` to use: ``given`` when given (checked by the caller),
    else the recorded one when it is still the very file; ArtifactError saying what to do
    (pass it with ``option``) when it is gone or changed. None when none is recorded."""
    if given is not None:
        return Path(given)
    recorded = parent(lineage, role, owner=owner)
    if recorded is None:
        return None
    change = parent_change(recorded)
    if change:
        hint = f"pass the {role} with {option}" if option else f"rebuild the {owner}"
        raise ArtifactError(f"{owner}: {change}; {hint}")
    return recorded.path


def store_identity(st) -> dict[str, Any]:
    """What makes a store the one an artifact was made from, short of its bytes: the backbone
    that filled it, its classes and their training counts, its feature size."""
    return {"backbone_sha256": str(st.attrs.get("backbone_sha256", "")), "arch": str(st.attrs.get("arch", "")),
            "class_names": [str(n) for n in st.class_names],
            "train_counts": [int(c) for c in st.train_counts],
            "feature_dim": int(st.shape("train", "pooled")[1])}


def identity_diff(recorded: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """What differs between two store identities, in words (empty: none)."""
    words = {"backbone_sha256": "backbone", "arch": "architecture", "class_names": "class names",
             "train_counts": "training counts", "feature_dim": "feature size"}
    return [words[k] for k in words if k in recorded and recorded.get(k) != found.get(k)]
