#!/usr/bin/env bash
# Judge signal on human-labelled pairs the model never trained on: parsed vs expected scoring
# for M0 and the default config's M1, beside the length heuristic (docs/RESULTS.md).
#   bash benchmarks/judge_signal.sh            # PandaLM path, pairs and run dir from the env
set -euo pipefail
SRLM=${SRLM:-.venv/bin/srlm}
PANDALM=${PANDALM:-../shared/data/pandalm/testset-v1.json}
DIR=${DIR:-runs/signal}
N=${N:-200}
export HF_HUB_OFFLINE=1
"$SRLM" run --config default iterations=0 --no-eval --output-dir "$DIR" >/dev/null
for mode in parsed expected; do
  "$SRLM" eval "$DIR" --models M0,M1 "eval.human_prefs=[pandalm:$PANDALM,embedded:human_prefs]" \
    eval.max_human_pairs="$N" judge.scoring="$mode" judge.stop_repetition=8 eval.k=1 eval.ifeval=false \
    "eval.h2h_judge=[]" eval.pairwise_agreement=false eval.max_prompts=1 > "$DIR/eval_$mode.json"
  python3 - "$DIR/eval_$mode.json" "$mode" <<'PY'
import json, sys
text, mode = open(sys.argv[1]).read(), sys.argv[2]
res = json.loads(text[text.index("\n{") + 1:] if not text.startswith("{") else text)  # after eval's progress lines
for src, per_model in res["judge_agreement"].items():
    base = res["baselines"][src]["length"]
    for m, a in per_model.items():
        print(f"{mode:8s} {src:14s} {m}: accuracy {a['accuracy']:.3f} (decided {a['accuracy_decided'] or 0:.3f}), "
              f"parse failures {a['parse_failure_rate']:.2f}, non-tie pairs {a['human_non_tie']}; "
              f"length heuristic {base['accuracy']:.3f}")
PY
done
