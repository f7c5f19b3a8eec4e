#!/usr/bin/env bash
# ImageNet-LT or Places-LT from their list files ("relative/path.jpg label" per line), the
# two image stages on NPROC GPUs with torchrun (DDP, NCCL), Phase II on one.
#   ROOT     image root the list files are relative to (required)
#   LISTS    folder with <PREFIX>_train.txt, <PREFIX>_val.txt, <PREFIX>_test.txt (required)
#   PREFIX   ImageNet_LT (default) or Places_LT
#   NPROC    processes (GPUs) on this machine (default 8); more machines: add --nnodes etc. via TORCHRUN
#   ARCH     backbone (default resnet50); EPOCHS (90); BATCH global batch (512); LR (0.2); WORKERS (8)
#   RESIDENT_GIB  FSA maps kept on the GPU up to this size, streamed from the store beyond (default 24)
#   RUNS     output folder (default runs/<prefix>); EXTRA more train-backbone options
#   FINETUNE  more augment-finetune options (e.g. "--iterations 3200")
# On shared file systems without locking: export HDF5_USE_FILE_LOCKING=FALSE (docs/scaling.md).
set -euo pipefail
cd "$(dirname "$0")/.."
LTKIT=${LTKIT:-$(command -v ltkit || echo .venv/bin/ltkit)}
TORCHRUN=${TORCHRUN:-torchrun}
: "${ROOT:?set ROOT to the image root}" "${LISTS:?set LISTS to the folder of list files}"
PREFIX=${PREFIX:-ImageNet_LT}
RUNS=${RUNS:-runs/$PREFIX}
mkdir -p "$RUNS"
WORKERS=${WORKERS:-8}
RUN="$TORCHRUN --nproc-per-node ${NPROC:-8} -m ltkit"

# Phase I and the feature store: every rank trains / extracts its shard, rank 0 writes.
# The lists are long-tailed already: --imbalance 1 keeps them as they are.
# shellcheck disable=SC2086
$RUN train-backbone --data imagefolder --root "$ROOT" --train-list "$LISTS/${PREFIX}_train.txt" \
    --val-list "$LISTS/${PREFIX}_val.txt" --test-list "$LISTS/${PREFIX}_test.txt" --imbalance 1 \
    --arch "${ARCH:-resnet50}" --epochs "${EPOCHS:-90}" --batch-size "${BATCH:-512}" --lr "${LR:-0.2}" \
    --workers "$WORKERS" ${EXTRA:-} --out "$RUNS/backbone.pt" > /dev/null
$RUN extract "$RUNS/backbone.pt" --workers "$WORKERS" --out "$RUNS/features.h5" > /dev/null

# Phase II from the cache, one process.
$LTKIT confusing-classes "$RUNS/features.h5" --out "$RUNS/table.pt" \
    | $LTKIT augment-finetune - --augment fsa ${FINETUNE:-} --resident-gib "${RESIDENT_GIB:-24}" --out "$RUNS/fsa.pt" \
    | $LTKIT evaluate - --quiet > "$RUNS/fsa.json"
$LTKIT evaluate "$RUNS/features.h5" --table "$RUNS/table.pt" --quiet > "$RUNS/phase1.json"
$LTKIT compare "$RUNS/phase1.json" "$RUNS/fsa.json"
