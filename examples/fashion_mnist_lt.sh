#!/usr/bin/env bash
# The demo: the whole ltkit pipeline on the real Fashion-MNIST-LT (imbalance factor 100), then
# one table comparing the Phase-I classifier with FSA and the other Phase-II methods.
# A rerun reuses every artifact that already exists with the same options.
#   EPOCHS (default 10), RUNS (default runs/demo), LTKIT (default: ltkit on PATH or .venv),
#   DATA (the data set options), FINETUNE (more augment-finetune options)
set -euo pipefail
cd "$(dirname "$0")/.."
LTKIT=${LTKIT:-$(command -v ltkit || echo .venv/bin/ltkit)}
RUNS=${RUNS:-runs/demo}
mkdir -p "$RUNS"
EPOCHS=${EPOCHS:-10}
DATA=${DATA:---data fashion-mnist-lt --imbalance 100}

# Phase I, the feature store and the confusing-class table: one shell pipeline.
# shellcheck disable=SC2086
table=$($LTKIT train-backbone $DATA --epochs "$EPOCHS" --out "$RUNS/backbone.pt" \
        | $LTKIT extract - --out "$RUNS/features.h5" \
        | $LTKIT confusing-classes - --out "$RUNS/table.pt")

# Phase II from the cache: every method takes seconds.
$LTKIT evaluate "$RUNS/features.h5" --table "$table" --quiet > "$RUNS/phase1.json"  # tail: the table's
runs=("$RUNS/phase1.json")
for method in "fsa:--augment fsa" "none:--augment none" "crt:--classifier crt" \
              "lws:--classifier lws" "tau-norm:--classifier tau-norm" "ncm:--classifier ncm" \
              "cloud:--augment cloud"; do
    name=${method%%:*}
    # shellcheck disable=SC2086
    $LTKIT augment-finetune "$table" ${method#*:} ${FINETUNE:-} --out "$RUNS/$name.pt" \
        | $LTKIT evaluate - --quiet > "$RUNS/$name.json"
    runs+=("$RUNS/$name.json")
done
$LTKIT compare "${runs[@]}"
