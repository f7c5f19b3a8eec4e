"""docs/results.md's sections on where the gap lies (the bound, issue 15), on `ltkit sweep`
(issue 16) and on Phase-I recipes (issue 17). Pure: figures in (see `results_render`), Markdown
out; every share is `ltkit.bound.gap_closed`, the formula `evaluate` and `compare` use.
"""

from __future__ import annotations

import results_render as page
from ltkit.bound import gap_closed
from results_plan import BOUND_ON, BOUND_RUNS, CEILINGS, RECIPES, SWEEP_ON
from results_render import ceiling_of, label, mean, phase1, share, table


def gap_split(phase1_acc: float | None, bound: float | None, ceiling: float | None) -> tuple[float, float] | None:
    """(the classifier's share, the representation's share) of the gap from Phase I to the
    ceiling, in %: Phase I -> bound is the classifier's (a head can reach the bound on this
    representation), bound -> ceiling the representation's. None without a gap."""
    part = gap_closed(bound, phase1_acc, ceiling)
    return None if part is None else (100 * part, 100 * (1 - part))


def best_bound(runs: dict) -> tuple[str, float] | None:
    """The higher of the pooled and the spatial bound (mean balanced accuracy), with its name."""
    bounds = [(BOUND_RUNS[k], mean(runs[k]["runs"], "balanced")) for k in ("crt-bound", "spatial-bound") if k in runs]
    return max(bounds, key=lambda b: b[1]) if bounds else None


def bound_section(data: dict) -> list[str]:
    p1, runs, ceiling = phase1(data), data["runs"], ceiling_of(data)
    stores = [k for k in BOUND_ON if k in p1 and all(m in runs.get(k, {}) for m in BOUND_RUNS)]
    if not stores:
        return []
    out = ["## Where the gap lies: the bound, and a head on the maps", "",
           "Per store, heads trained on the frozen cache: **pooled cRT** (`--classifier crt`, a re-initialised "
           "linear head, class-balanced), its **bound** (the same head trained on the balanced bound split: "
           "`--train-on bound`, the empirical classification bound of DisAlign), the **spatial head** (`--head "
           "spatial --classifier crt`: a conv block on the stored maps, then pooling and a linear layer) and its "
           "bound. *Classifier gap closed*: (head − Phase I) / (its bound − Phase I) on test, from `ltkit "
           "evaluate CLF --bound BOUND_CLF`.", ""]
    for k in stores:
        rows = [("Phase I", [p1[k]])] + [(name, runs[k][key]["runs"]) for key, name in BOUND_RUNS.items()]
        out += [f"### {label(k)} (`{k}`)", ""] + table(rows, p1[k]["balanced"], ceiling, clf_gap=True) + [""]
    out += ["### How much of the gap is the classifier's, how much the representation's", "",
            "The gap from Phase I to a ceiling splits at the store's bound (the better of the two heads' bounds): "
            "Phase I → bound is the classifier's share (a head trained from this cache could close it), bound → "
            "ceiling the representation's (only a better Phase I closes it).", "",
            "| backbone | ceiling | Phase I % | bound % (head) | ceiling % | classifier's share | representation's "
            "share |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    p1_all = phase1(data)
    for k in stores:
        bound = best_bound(runs[k])
        for epochs, name in CEILINGS.items():
            top = p1_all.get(name, {}).get("balanced")
            split = gap_split(p1[k]["balanced"], bound[1], top)
            if top is None or split is None:
                continue
            out.append(f"| {label(k)} | {epochs} epochs | {p1[k]['balanced']:.2f} | {bound[1]:.2f} ({bound[0]}) | "
                       f"{top:.2f} | {share(split[0])} | {share(split[1])} |")
    return out + [""]


def sweep_section(data: dict) -> list[str]:
    stores = [k for k in SWEEP_ON if k in data["sweeps"]]
    if not stores:
        return []
    p1 = phase1(data)
    out = ["## `ltkit sweep`: every Phase-II method, chosen on held-out images", "",
           "`ltkit confusing-classes STORE --out T.pt; ltkit sweep T.pt --out DIR`: every method that applies, "
           "each tuning its own options on val, compared on the bound split (which no method tuned on), the "
           "test split reported, never used. *Test rank*: where the chosen method stands on test among all "
           "of them (1: validation picked the best).", "",
           "| backbone | Phase I % | cRT % | chosen (on bound) | chosen % | test rank | few: chosen / cRT | "
           "tail: chosen / cRT |", "| --- | ---: | ---: | --- | ---: | ---: | --- | --- |"]
    pair = lambda s, k: f"{fmt(s['pick'][k])} / {fmt(s['crt'][k])}"  # noqa: E731
    for k in stores:
        s = data["sweeps"][k]
        out.append(f"| {label(k)} | {fmt(p1[k]['balanced'])} | {fmt(s['crt']['balanced'])} | {s['chosen']} | "
                   f"{fmt(s['pick']['balanced'])} | {s['test_rank']} of {s['ranked']} | {pair(s, 'few')} | "
                   f"{pair(s, 'tail')} |")
    out.append("")
    for k in stores:
        out += [f"### The sweep on {label(k)} (`{k}`)", "", data["sweeps"][k]["markdown"], ""]
    return out


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def recipe_rows(data: dict) -> list[dict]:
    """Per recipe backbone: Phase I, val, cRT, the sweep's pick, and the pipeline's gap closed
    from the 10-epoch CE Phase I to each ceiling (the pick when swept, else cRT)."""
    p1, runs = phase1(data), data["runs"]
    base = p1.get("if100-ce", {}).get("balanced")
    rows = []
    for k in RECIPES:
        if k not in p1:
            continue
        crt = mean(runs[k]["crt"]["runs"], "balanced") if "crt" in runs.get(k, {}) else None
        sweep = data["sweeps"].get(k)
        final = sweep["pick"]["balanced"] if sweep else crt
        gaps = {e: gap_closed(final, base, p1.get(name, {}).get("balanced")) for e, name in CEILINGS.items()}
        rows.append({"name": k, "phase1": p1[k]["balanced"], "val": data["preps"][k]["val"], "crt": crt,
                     "chosen": sweep["chosen"] if sweep else None, "final": final,
                     "gaps": {e: None if g is None else 100 * g for e, g in gaps.items()}})
    return rows


def recipes_section(data: dict) -> list[str]:
    rows = recipe_rows(data)
    if len(rows) < 2 or "recipes" in data["skipped"]:
        return []
    out = ["## Phase-I recipes (IF 100)", "",
           "Each recipe alone on the CE backbone (`train-backbone` options in the commands below; 10 epochs unless "
           "said), then Phase II from its cache: cRT, and `ltkit sweep`'s pick. **val %**: Phase I's balanced "
           "accuracy on the validation split (200 images), what chooses a recipe; the test columns inform no "
           "choice. **gap closed**: of the distance from the 10-epoch CE backbone's Phase I to the ceiling "
           "(10 or 30 epochs on the full balanced set), what the whole pipeline (recipe + the sweep's pick, or cRT "
           "where no sweep ran) closes.", "",
           "| recipe | Phase I % | val % | cRT % | sweep's pick | after it % | gap closed (10-epoch ceiling) | "
           "gap closed (30-epoch ceiling) |", "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {label(r['name'])} | {fmt(r['phase1'])} | {fmt(r['val'])} | {fmt(r['crt'])} | "
                   f"{r['chosen'] or '—'} | {fmt(r['final'])} | {share(r['gaps'][10])} | {share(r['gaps'][30])} |")
    chosen = max(rows, key=lambda r: r["val"])
    out += ["", f"Validation chooses **{label(chosen['name'])}** (val {chosen['val']:.2f} %); on test its pipeline "
            f"reaches {fmt(chosen['final'])} %. Ceilings: 10 epochs {fmt(ceiling_of(data, 10))} %, 30 epochs "
            f"{fmt(ceiling_of(data, 30))} %.", ""]
    return out


def render(data: dict) -> str:
    """The whole page."""
    parts = [page.header(data), page.phase2_sections(data), bound_section(data), sweep_section(data),
             recipes_section(data), page.reading(data), page.ceilings(data), page.published(), page.commands(data),
             page.missing(data)]
    return "\n".join(line for part in parts for line in part)
