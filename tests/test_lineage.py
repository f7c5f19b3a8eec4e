"""ltkit.lineage: a parent found by role, checked against the file; store identities; check_choice."""

from __future__ import annotations

import pytest

from ltkit.artifacts import make_lineage
from ltkit.errors import ArtifactError, ConfigError
from ltkit.lineage import identity_diff, parent, parent_change, store_identity, verified_parent
from ltkit.registry import check_choice
from ltkit.store import open_store
from storefixtures import make_store


def test_parent_found_checked_and_verified(tmp_path):
    store = make_store(tmp_path / "s.h5")
    lineage = make_lineage({"store": store}, {}, 0)
    found = parent(lineage, "store", owner="t.pt")
    assert found.path == store.resolve() and parent(lineage, "table", owner="t.pt") is None
    assert parent_change(found) is None and verified_parent(lineage, "store", owner="t.pt") == store.resolve()
    copy = tmp_path / "copy.h5"
    copy.write_bytes(store.read_bytes())
    assert parent_change(found, copy) is None  # same bytes elsewhere: the same parent
    assert "another store" in parent_change(found, copy, same_path=True)
    with open(store, "ab") as fh:
        fh.write(b"\0")
    assert "hash differs" in parent_change(found)
    with pytest.raises(ArtifactError, match="hash differs.*--store"):
        verified_parent(lineage, "store", owner="t.pt", option="--store")
    assert verified_parent(lineage, "store", owner="t.pt", given=copy) == copy
    store.unlink()
    assert "is gone" in parent_change(found)


@pytest.mark.parametrize("lineage", ["text", {"parents": []}, {"parents": {"store": "s.h5"}},
                                     {"parents": {"store": {"path": 3, "sha256": "x"}}}])
def test_a_damaged_lineage_is_one_error_naming_its_owner(lineage):
    with pytest.raises(ArtifactError, match="c.pt is damaged"):
        parent(lineage, "store", owner="c.pt")


def test_store_identity_tells_backbones_and_classes_apart(tmp_path):
    with open_store(make_store(tmp_path / "a.h5")) as a, open_store(make_store(tmp_path / "b.h5", seed=1)) as b, \
            open_store(make_store(tmp_path / "c.h5", num_classes=5)) as c:
        ida, idb, idc = store_identity(a), store_identity(b), store_identity(c)
    assert identity_diff(ida, ida) == [] and identity_diff(ida, idb) == ["backbone"]
    assert {"class names", "training counts"} <= set(identity_diff(ida, idc))


def test_check_choice_lists_the_valid_names():
    assert check_choice("csv", ("table", "csv"), "--format") == "csv"
    with pytest.raises(ConfigError, match=r"--format 'html': valid choices are table, csv"):
        check_choice("html", ("table", "csv"), "--format")
