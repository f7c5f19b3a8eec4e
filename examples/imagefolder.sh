#!/usr/bin/env bash
# Your own data set as image folders: ROOT/train/<class>/*, ROOT/test/<class>/* (or val/),
# grayscale or colour, classes in folder-name order. Optionally made long-tailed on top.
#   ROOT       the data set folder (required)
#   IMBALANCE  imbalance factor to impose on the training folders (default: none, keep them as they are)
#   IMAGE_SIZE side the images are resized to (default: their own size when they share one, else 224)
#   ARCH       backbone (default resnet18)
#   EPOCHS     training epochs (default 30); RUNS output folder (default runs/imagefolder)
#   EXTRA      more train-backbone options (e.g. "--pretrained resnet18.pth --lr 0.01")
#   FINETUNE  more augment-finetune options (e.g. "--iterations 3200")
set -euo pipefail
cd "$(dirname "$0")/.."
LTKIT=${LTKIT:-$(command -v ltkit || echo .venv/bin/ltkit)}
: "${ROOT:?set ROOT to a folder with train/<class>/ and test/<class>/ images}"
RUNS=${RUNS:-runs/imagefolder}
mkdir -p "$RUNS"

# shellcheck disable=SC2086
$LTKIT train-backbone --data imagefolder --root "$ROOT" ${IMBALANCE:+--imbalance "$IMBALANCE"} \
        ${IMAGE_SIZE:+--image-size "$IMAGE_SIZE"} --arch "${ARCH:-resnet18}" --epochs "${EPOCHS:-30}" \
        ${EXTRA:-} --out "$RUNS/backbone.pt" \
    | $LTKIT extract - --out "$RUNS/features.h5" \
    | $LTKIT confusing-classes - --csv "$RUNS/confusing.csv" --out "$RUNS/table.pt" \
    | $LTKIT augment-finetune - --augment fsa ${FINETUNE:-} --out "$RUNS/fsa.pt" \
    | $LTKIT evaluate - --report "$RUNS/report" > "$RUNS/fsa.json"
$LTKIT evaluate "$RUNS/features.h5" --table "$RUNS/table.pt" --quiet > "$RUNS/phase1.json"
$LTKIT compare "$RUNS/phase1.json" "$RUNS/fsa.json"
echo "report: $RUNS/report (per-class accuracy against training count, confusion matrix)" >&2
