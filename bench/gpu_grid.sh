#!/usr/bin/env bash
# Issue 11's comparison and ablation on one lent GPU, in one call of at most 10 minutes (bench/grid.py):
# HadSkip's defaults, entropy exit, BERxiT and static truncation on MRPC, CoLA and SST-2 (4,000 training rows)
# at seeds 1-3, then one HadSkip variant after another from the defaults, until DEADLINE seconds (first run
# 2026-12-04, bench/RESULTS.md "On a GPU"). First now: `bsmix`, half-layer homotopic steps down to 3 of 6
# layers and the defaults' two long steps below (the CPU's `bs05`, half-layer steps throughout, rose at 3
# layers in every seed and fell at 1.5; `bs05s2`, the same at two epochs below 3 layers, fell at 1.5 in every
# seed on CoLA and SST-2, so it is not run), `bs05` itself, `anorm`, the score-function advantages divided
# by their batch RMS (CPU: trains above the budget, no win), then `lr2`, the stage III learning rate the
# CPU's 5e-5 replaced (three CPU seeds a task), `low1`, one epoch at every homotopic step, the path the CPU's
# low-budget epochs replaced (1.5 layers only: higher with them in every seed on CoLA and SST-2), `b60`, the
# long steps from 3 of 6 layers down (3 layers higher in every CPU seed on SST-2, a tie on CoLA, mixed on
# MRPC's two seeds), `low5`, a larger scale (CPU: lower than 3 in every CoLA seed, a tie), then `pairent` and
# `pair`, the pair baseline with and without the entropy bonus that undid its CoLA loss at 1.5 layers on
# three CPU seeds, then `reinmax`, the ReinMax defaults the score-function
# estimator replaced on CPU evidence, which a GPU has not yet compared at three seeds). Run on the device
# machine after `source .carry/setup.sh` (../shared/device/prepare.sh fills .carry). Writes under OUT
# (default: a temp folder): table.txt, grid.log, gpu.csv (utilisation every 15 s), grid.tgz (every run's
# results.parquet, config.json and log; no checkpoints, no stage I cache).
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
DEADLINE=${DEADLINE:-510}
PARALLEL=${PARALLEL:-14}
runs=/tmp/grid
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 15 >"$OUT/gpu.csv" 2>&1 &
smi=$!
python3 bench/grid.py --tasks mrpc,cola,sst2 --seeds 1,2,3 --baselines entropy,berxit,static \
    --variant bsmix=stage3.budget_step=0.5,stage3.low_budget_step=1 \
    --variant bs05=stage3.budget_step=0.5 \
    --variant anorm=gates.advantage_norm=rms \
    --variant lr2=stage3.lr=2e-5 \
    --variant low1=stage3.low_budget_scale=1 \
    --variant b60=stage3.low_budget_below=0.6 \
    --variant low5=stage3.low_budget_scale=5 \
    --variant pairent=gates.baseline=pair,gates.entropy_bonus=0.1 \
    --variant pair=gates.baseline=pair \
    --variant ent=gates.entropy_bonus=0.1 \
    --variant reinmax=gates.estimator=reinmax,stage3.budget_target=sampled,gates.detach_input=false \
    --variant perg=stage3.clip=per_group \
    --variant attached=gates.detach_input=false \
    --variant routes=stage3.route_finetune_steps=100 \
    --variant drop=stage3.student_dropout=true \
    --variant feat=stage3.alpha_hidden=1,stage3.alpha_attn=1,stage3.alpha_emb=1 \
    --parallel "$PARALLEL" --deadline "$DEADLINE" --out "$runs" -- \
    --data-dir .carry/glue --set threads=1 --set-for sst2:data.train_limit=4000 2>&1 | tee "$OUT/grid.log"
kill "$smi"
python3 bench/methods.py --table "$runs" >"$OUT/table.txt" 2>&1
tar czf "$OUT/grid.tgz" -C "$runs" --exclude=cache --exclude=checkpoints .
ls -la "$OUT"
