#!/usr/bin/env bash
# Does SFT make M0 worse? M1 of several SFT settings on the embedded model, each measured on the
# same IFEval subset as the verified config (320 prompts, 256-token cap), paired against M0.
#   bash benchmarks/sft_ifeval.sh [M0_RUN]   (M0_RUN: a run whose eval/ifeval_M0.jsonl has those
#   settings, e.g. runs/verified; otherwise M0 is evaluated in the first variant's directory)
# Prints one row per variant: IFEval score with CI, delta vs M0 with the paired CI, mean chars.
set -euo pipefail
cd "$(dirname "$0")/.."
SRLM=${SRLM:-.venv/bin/srlm}
PY=${PY:-.venv/bin/python}
M0_RUN=${1:-}
OUT=${OUT:-runs/sft-ifeval}
EVAL="eval.ifeval_size=320 eval.ifeval_max_new_tokens=256 eval.human_prefs=[] eval.h2h_judge=[] eval.max_prompts=1 eval.pairwise_agreement=false"
export HF_HUB_OFFLINE=1
declare -A VARIANTS=(
  [default]=""                                                     # default.yaml: IFT 12 + EFT 48, 2 epochs, LoRA 3e-4
  [eft_only]="data.max_ift=1 data.max_eft=48"                      # (max_ift=0 means all; 1 is the fewest)
  [gentle]="sft.learning_rate=1e-4 sft.epochs=1"
  [ift_only]="data.max_ift=60 data.max_eft=1"
)
for name in default eft_only gentle ift_only; do
  dir="$OUT/$name"
  # shellcheck disable=SC2086
  $SRLM sft "$dir" --config default ${VARIANTS[$name]}
  if [[ -n "$M0_RUN" && ! -e "$dir/eval/ifeval_M0.jsonl" ]]; then
    mkdir -p "$dir/eval" && cp "$M0_RUN"/eval/ifeval_M0.jsonl* "$dir/eval/"
  fi
  # shellcheck disable=SC2086
  $SRLM eval "$dir" --models $([[ -e "$dir/eval/ifeval_M0.jsonl" ]] && echo M1 || echo M0,M1) $EVAL
done
$PY - "$OUT" <<'PYEOF'
import os, sys
from srlm.evaluation import ifeval
from srlm.run.records import read_jsonl
out = sys.argv[1]
print(f"{'variant':10} {'M1 score':>9} {'95% CI':>15} {'M1-M0':>7} {'paired 95% CI':>17} {'chars M0/M1':>12}")
for name in sorted(os.listdir(out)):
    ev = os.path.join(out, name, "eval")
    m0, m1 = read_jsonl(os.path.join(ev, "ifeval_M0.jsonl")), read_jsonl(os.path.join(ev, "ifeval_M1.jsonl"))
    s0, s1 = ifeval.summarize(m0), ifeval.summarize(m1)
    d = ifeval.paired_delta(m0, m1, seed=0)
    lo, hi = s1["ifeval/score_ci95"]; dlo, dhi = d["ifeval/delta_score_ci95"]
    print(f"{name:10} {s1['ifeval/score']:9.3f} [{lo:.3f}, {hi:.3f}] {d['ifeval/delta_score']:+7.3f} "
          f"[{dlo:+.3f}, {dhi:+.3f}] {s0['ifeval/mean_response_chars']:5.0f}/{s1['ifeval/mean_response_chars']:5.0f}")
print(f"M0 score {s0['ifeval/score']:.3f} {s0['ifeval/score_ci95']}")
PYEOF
