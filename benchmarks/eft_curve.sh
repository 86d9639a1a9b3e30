#!/usr/bin/env bash
# Judge agreement against the number of EFT examples used in SFT (issue 8; docs/RESULTS.md).
# Each point: M0 + cpu-full's SFT recipe on 16 IFT + the first N embedded EFT examples (plus,
# optionally, the EFT that `srlm eft-build` kept, given as BUILT), then M1 judges human pairs
# it never trained on (PandaLM's first records + the embedded human_prefs) in expected mode,
# one judgment per response, beside the length heuristic. Prints one line per point.
#   BUILT=runs/cpu-full/eft/eft.jsonl bash benchmarks/eft_curve.sh
set -euo pipefail
SRLM=${SRLM:-.venv/bin/srlm}
PANDALM=${PANDALM:-../shared/data/pandalm/testset-v1.json}
ROOT=${ROOT:-runs/eft_curve}
NS=${NS:-"48 168"}
PAIRS=${PAIRS:-150}
BUILT=${BUILT:-}
export HF_HUB_OFFLINE=1
EVAL=(eval.max_human_pairs="$PAIRS" "eval.human_prefs=[pandalm:$PANDALM,embedded:human_prefs]" eval.k=1
      eval.ifeval=false "eval.h2h_judge=[]" eval.pairwise_agreement=false eval.max_prompts=1)

point() {  # point NAME MODELS SFT-OVERRIDES...
  local name=$1 models=$2; shift 2
  local dir="$ROOT/$name"
  "$SRLM" run --config cpu-full --output-dir "$dir" iterations=0 --no-eval eft_build.enabled=false \
    data.max_ift=16 "$@" "${EVAL[@]}" >/dev/null
  "$SRLM" eval "$dir" --models "$models" "${EVAL[@]}" > "$dir/eval_curve.json"
  python3 - "$dir/eval_curve.json" "$name" <<'PY'
import json, sys
text, name = open(sys.argv[1]).read(), sys.argv[2]
res = json.loads(text[text.index("\n{") + 1:] if not text.startswith("{") else text)  # after progress lines
for src, per_model in res["judge_agreement"].items():
    base = res["baselines"][src]["length"]
    for m, a in per_model.items():
        print(f"{name:10s} {src:14s} {m}: accuracy {a['accuracy']:.3f} on {a['human_non_tie']} non-tie pairs; "
              f"length heuristic {base['accuracy']:.3f}")
PY
}

first=1
for n in $NS; do
  models=M1; [ $first = 1 ] && models=M0,M1; first=0
  point "eft_$n" "$models" data.max_eft="$n"
done
if [ -n "$BUILT" ]; then
  n=$(wc -l < "$BUILT")
  point "eft_168+$n" M1 data.max_eft=0 "data.eft=[embedded:eft,$BUILT]"
fi
