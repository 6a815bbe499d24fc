#!/usr/bin/env bash
# Regenerates the demo world's base (shapes world v2, pipelines/shapes/base/): the v1 base (scripts/
# shapes_regenerate_base.sh) fine-tuned on counting and composition prompts whose captions omit one object in
# 60% of the images (captions.extra_object_scene), so the base draws an unrequested object at about that rate:
# one prompt-independent mode choice for RL to fix. Deterministic given the seeds; CPU only, ~25 min on one thread.
# Usage: scripts/shapes_regenerate_demo_base.sh [WORKDIR] [V1_BASE]   (defaults runs/shapes_demo_base, runs/shapes_base/flow_more/final)
set -euo pipefail
WORK=${1:-runs/shapes_demo_base}
V1=${2:-runs/shapes_base/flow_more/final}
THREADS=${THREADS:-1}   # 1 thread is faster than 2 on a shared, oversubscribed 2-core machine
export OMP_NUM_THREADS=$THREADS

python -m mmgrpo.pipelines.shapes.grammar                       # prompt files (incl. the demo subsets)
python -m mmgrpo.pipelines.shapes.pretrain --out "$WORK" --threads "$THREADS" --seed 3 \
    --images 16000 --vae-from "$V1/vae" --init-from "$V1" \
    --caption-noise 0.6 --caption-error extra --categories counting composition \
    --steps 1500 --batch 48 --lr 1e-3 --warmup 50 --ema 0.99 --save-every 300 --eval-images 32
CKPT=${CKPT:-$WORK/final}
rm -rf pipelines/shapes/base && mkdir -p pipelines/shapes/base
cp -r "$CKPT"/. pipelines/shapes/base/
python scripts/shapes_make_tokenizer.py                          # vocab.json / merges.txt next to each tokenizer
python -m mmgrpo.pipelines.shapes.evaluate --threads "$THREADS" --split demo_eval | tee "$WORK/base_eval.json"
