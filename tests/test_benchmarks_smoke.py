"""`make bench` machinery: every figure is produced and every row is on the page.

No timing is asserted (the machine may be busy); only that the benchmarks run end to end on
tiny sizes and that the page reports what they measured, failed or skipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_bigstore  # noqa: E402
import run_all  # noqa: E402

VERDICTS = {"pass", "FAIL", "info"}


@pytest.mark.e2e  # the benchmarks run their children as subprocesses
def test_quick_run_produces_every_figure_and_row(tmp_path):
    page, raw = tmp_path / "benchmarks.md", tmp_path / "results.json"
    work = tmp_path / "work"
    code = run_all.main(["--quick", "--out", str(page), "--json", str(raw), "--workdir", str(work)])
    assert code == 0
    results = json.loads(raw.read_text())["results"]
    assert set(results) == {"store", "fsa", "bigstore", "cli", "sweep", "spatial"}
    assert all(isinstance(r, dict) for r in results.values()), results
    text = page.read_text()
    for fig in run_all.CLAIMS:
        value, verdict = run_all.judge(fig, results)
        assert verdict in VERDICTS and value != "-", fig.label
        assert f"| {fig.label} | {value} | {run_all.bound(fig)} | {verdict} |" in text
    for fig in run_all.ABSOLUTE:
        value, _ = run_all.judge(fig, results)
        assert value != "-", fig.label
        assert f"| {fig.label} | {value} |" in text
    for key in ("CPU", "GPU", "torch", "date", "load average"):
        assert f"| {key}" in text
    assert "Quick smoke run" in text
    big = results["bigstore"]
    assert big["streamed_spatial"] == "MappedSpatial"  # (a) really kept the maps out of memory
    assert big["in_memory"]["spatial"] == "TensorSpatial"  # (b) really held every map
    assert big["big_rows"] == run_all.QUICK["bigstore"]["rows"]
    assert not list(work.glob("bigstore-*"))  # the stores are deleted afterwards


def _results(**overrides):
    store = {"extract_vs_forward": 1.3, "read_vs_memmap": 0.8, "store_bytes_per_image": 1000.0}
    return {"store": store, **overrides}


def test_page_marks_failed_skipped_and_errored_benchmarks():
    results = _results(fsa="RuntimeError: boom")  # bigstore absent: skipped
    claims = {fig.key: run_all.judge(fig, results) for fig in run_all.CLAIMS}
    assert claims["extract_vs_forward"] == ("1.30x", "FAIL")  # target <= 1.15
    assert claims["read_vs_memmap"] == ("0.80x", "pass")  # target >= 0.5
    assert claims["store_bytes_per_image"] == ("1,000 B", "info")
    assert claims["store_bytes_per_image_lzf"] == ("-", "missing")
    assert claims["batches.128.speedup"] == ("-", "error")
    assert claims["finetune_peak_rss_bytes"] == ("-", "skipped")
    text = run_all.markdown(results, {"CPU": "test"}, quick=False, loads=[0.1, 2.0],
                            settings=run_all.FULL)
    assert "| extract time / forward passes alone | 1.30x | <= 1.15x | FAIL |" in text
    assert "failed: `RuntimeError: boom`" in text
    assert "`benchmarks/bench_bigstore.py` (defaults): skipped" in text
    assert "shared and busy" in text  # load average 2.0 > 1.5 at the end


def test_rss_bound_is_strict_and_in_bytes():
    fig = next(f for f in run_all.CLAIMS if f.key == "finetune_peak_rss_bytes")
    at = {"bigstore": {"finetune_peak_rss_bytes": 1.5e9}}
    below = {"bigstore": {"finetune_peak_rss_bytes": 1.5e9 - 1}}
    assert run_all.judge(fig, at) == ("1.50 GB", "FAIL")
    assert run_all.judge(fig, below)[1] == "pass"


def test_lookup_reads_int_keyed_batch_sizes():
    assert run_all.lookup({"batches": {128: {"speedup": 3.0}}}, "batches.128.speedup") == 3.0
    assert run_all.lookup({"batches": {"512": {"speedup": 2.0}}}, "batches.512.speedup") == 2.0
    assert run_all.lookup({"batches": {}}, "batches.128.speedup") is None


def test_bigstore_refuses_a_full_disk(tmp_path):
    with pytest.raises(RuntimeError, match="free"):
        bench_bigstore.check_disk(tmp_path, need_bytes=1.0, min_free_gib=1e9)
    bench_bigstore.check_disk(tmp_path, need_bytes=1.0, min_free_gib=0.0)


def test_class_profile_sums_to_rows_with_every_class():
    counts = bench_bigstore.class_counts(300, 10, imbalance=100.0)
    assert counts.sum() == 300 and counts.min() >= 1
    assert list(counts) == sorted(counts, reverse=True)
    with pytest.raises(ValueError):
        bench_bigstore.class_counts(5, 10, imbalance=100.0)


def test_bigstore_refuses_a_budget_that_holds_the_big_store(tmp_path):
    with pytest.raises(ValueError, match="resident budget"):
        bench_bigstore.run(rows=20, channels=2, side=2, resident_mib=1, workdir=str(tmp_path))
    assert not list(tmp_path.iterdir())  # refused before writing anything
