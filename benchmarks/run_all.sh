#!/usr/bin/env bash
# Runs every benchmark in sequence, logging to benchmarks/results/<name>.log.
# Usage: bash benchmarks/run_all.sh [M1_DIR]   (M1_DIR: an SFT'd model for the judging benchmark)
set -uo pipefail
cd "$(dirname "$0")"
mkdir -p results
PY=${PY:-../.venv/bin/python}
M1=${1:-}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
$PY bench_sampling.py 2>&1 | tee results/sampling.log
$PY bench_ceiling.py 2>&1 | tee results/ceiling.log
$PY bench_judging.py --repeats 2 --candidates 32 ${M1:+--model "$M1"} 2>&1 | tee results/judging.log
$PY bench_greedy.py 2>&1 | tee results/greedy.log
$PY bench_dpo.py 2>&1 | tee results/dpo.log
$PY bench_iteration.py 2>&1 | tee results/iteration.log
$PY bench_scaling.py --sizes 16,32,64 --rss-prompts 4 2>&1 | tee results/scaling.log
