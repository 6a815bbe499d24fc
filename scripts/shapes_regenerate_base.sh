#!/usr/bin/env bash
# Regenerates everything the shapes world ships: prompt files, tokenizer files, the pretrained base model
# (pipelines/shapes/base/) and its measured accuracy. Deterministic given the seeds; CPU only.
# Usage: scripts/shapes_regenerate_base.sh [WORKDIR]   (default runs/shapes_base)
set -euo pipefail
WORK=${1:-runs/shapes_base}
THREADS=${THREADS:-1}   # 1 thread is faster than 2 on a shared, oversubscribed 2-core machine
export OMP_NUM_THREADS=$THREADS

python -m mmgrpo.pipelines.shapes.grammar                       # prompts_train.txt / prompts_eval.txt
# Stage 1: the autoencoder (no transformer steps).
python -m mmgrpo.pipelines.shapes.pretrain --out "$WORK/vae" --threads "$THREADS" \
    --images 20000 --vae-steps 800 --vae-batch 32 --vae-lr 2e-3 --steps 0 --eval-images 8
# Stage 2: transformer + text encoders on the stage-1 latents (same data: same --images and --seed).
python -m mmgrpo.pipelines.shapes.pretrain --out "$WORK/flow" --threads "$THREADS" \
    --images 20000 --vae-from "$WORK/vae/final/vae" \
    --steps 2000 --batch 48 --lr 1e-3 --warmup 50 --ema 0.99 --save-every 250 --eval-images 32
# Stage 3: continue (warm restart of the cosine schedule) on 20000 fresh renders (--seed 1).
python -m mmgrpo.pipelines.shapes.pretrain --out "$WORK/flow_more" --threads "$THREADS" --seed 1 \
    --images 20000 --vae-from "$WORK/vae/final/vae" --init-from "$WORK/flow/final" \
    --steps 4000 --batch 48 --lr 1e-3 --warmup 50 --ema 0.99 --save-every 500 --eval-images 32
CKPT=${CKPT:-$WORK/flow_more/final}
rm -rf pipelines/shapes/base && mkdir -p pipelines/shapes/base
cp -r "$CKPT"/. pipelines/shapes/base/
python scripts/shapes_make_tokenizer.py                          # vocab.json / merges.txt next to each tokenizer
python -m mmgrpo.pipelines.shapes.evaluate --threads "$THREADS" | tee "$WORK/base_eval.json"
