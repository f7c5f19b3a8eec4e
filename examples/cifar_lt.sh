#!/usr/bin/env bash
# CIFAR-10-LT or CIFAR-100-LT (the LDAM-DRW protocol: exponential profile, balanced test set):
# Phase I with LDAM-DRW on LDAM's ResNet-32, then FSA and cRT from the cache, compared.
#   DATA      cifar10-lt (default) or cifar100-lt
#   ROOT      folder holding torchvision's cifar-10-batches-py / cifar-100-python (default data/cifar);
#             DOWNLOAD=1 fetches them there first (needs the network)
#   IMBALANCE imbalance factor n_max / n_min (default 100)
#   EPOCHS    training epochs (default 200, LDAM-DRW's schedule; DRW from 80 % of them)
#   RUNS      output folder (default runs/<data>-if<imbalance>); LTKIT: the ltkit command
#   EXTRA     more train-backbone options (e.g. "--device cuda:1")
#   FINETUNE  more augment-finetune options (e.g. "--iterations 3200")
# A rerun reuses every artifact that already exists with the same options.
set -euo pipefail
cd "$(dirname "$0")/.."
LTKIT=${LTKIT:-$(command -v ltkit || echo .venv/bin/ltkit)}
DATA=${DATA:-cifar10-lt}
ROOT=${ROOT:-data/cifar}
IMBALANCE=${IMBALANCE:-100}
EPOCHS=${EPOCHS:-200}
RUNS=${RUNS:-runs/$DATA-if$IMBALANCE}
mkdir -p "$RUNS"
DOWNLOAD=${DOWNLOAD:+--download}

# shellcheck disable=SC2086
table=$($LTKIT train-backbone --data "$DATA" --root "$ROOT" $DOWNLOAD --imbalance "$IMBALANCE" \
            --arch resnet32 --loss ldam --drw-epoch $((EPOCHS * 4 / 5)) --epochs "$EPOCHS" \
            ${EXTRA:-} --out "$RUNS/backbone.pt" \
        | $LTKIT extract - --out "$RUNS/features.h5" \
        | $LTKIT confusing-classes - --out "$RUNS/table.pt")

$LTKIT evaluate "$RUNS/features.h5" --table "$table" --quiet > "$RUNS/phase1.json"
$LTKIT augment-finetune "$table" --augment fsa ${FINETUNE:-} --out "$RUNS/fsa.pt" \
    | $LTKIT evaluate - --quiet > "$RUNS/fsa.json"
$LTKIT augment-finetune "$table" --classifier crt ${FINETUNE:-} --out "$RUNS/crt.pt" \
    | $LTKIT evaluate - --quiet > "$RUNS/crt.json"
$LTKIT compare "$RUNS/phase1.json" "$RUNS/fsa.json" "$RUNS/crt.json"
