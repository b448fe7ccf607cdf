#!/usr/bin/env bash
# check.sh ENGINE [STEPS]      ENGINE: llamafactory or axolotl
#
# The hand-off with the real engine, on the CPU:
#  1. installs the engine from PyPI in its own virtual environment ($VENV; default
#     /tmp/lfenv for `llamafactory`, /tmp/axenv for `axolotl`);
#  2. exports the identity run (examples/identity.toml) as the engine's project with the
#     base model's weights in it (`export-run --write-base --cpu`);
#  3. checks that the engine renders the training data as the studio does: LLaMA-Factory's
#     prompt token ids against the studio's (lf_tokens.py), axolotl's own config
#     validation and preprocessing (`axolotl preprocess`);
#  4. trains it there for STEPS optimizer steps (default 12; the step count given on the
#     command line, the project itself unchanged);
#  5. imports the output as a run and chats with its adapter.
# With UPDATE_FIXTURES=1 it also rewrites tests/fixtures/handoff/ from this run: the keys
# the engine's config schema accepts and the trainer_state.json (and LLaMA-Factory's
# trainer_log.jsonl) it wrote.
#
# Needs the release build (cargo build --release) and the default model (fetch-model).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
engine=${1:?usage: check.sh llamafactory|axolotl [STEPS]}
steps=${2:-12}
half=$(( (steps + 1) / 2 ))
studio=${STUDIO:-$root/target/release/finetune-studio}
work=${WORK:-$(mktemp -d "/tmp/$engine-check.XXXXXX")}
case $engine in
  llamafactory) venv=${VENV:-/tmp/lfenv}; pkg="llamafactory==${LF_VERSION:-0.9.5}"; cli=llamafactory-cli ;;
  axolotl) venv=${VENV:-/tmp/axenv}; pkg="axolotl==${AXOLOTL_VERSION:-0.19.0}"; cli=axolotl ;;
  *) echo "unknown engine $engine (llamafactory or axolotl)" >&2; exit 2 ;;
esac
if [ ! -x "$venv/bin/$cli" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "$pkg"
fi
export PATH="$venv/bin:$PATH" CUDA_VISIBLE_DEVICES= AXOLOTL_DO_NOT_TRACK=1
python -c "import $engine, torch, transformers, peft; print('$engine', $engine.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"

project=$work/project
rm -rf "$project"
"$studio" export-run --config "$root/examples/identity.toml" --to "$engine" \
  --out "$project" --write-base --cpu

t0=$(date +%s)
case $engine in
  llamafactory)
    echo "== token ids: LLaMA-Factory's template against the studio's"
    ours=()
    for prompt in "Who are you?" "What can you do for me?"; do
      ours+=("$("$studio" chat --prompt "$prompt" --temperature 0 --max-tokens 1 --json 2>/dev/null)")
    done
    python "$here/lf_tokens.py" "$project" "${ours[@]}"
    echo "== training $steps steps in LLaMA-Factory"
    (cd "$project" && NPROC_PER_NODE=1 llamafactory-cli train train.yaml max_steps="$steps" \
      eval_steps="$half" save_steps="$half" > "$work/train.log" 2>&1) || { tail -40 "$work/train.log"; exit 1; }
    ;;
  axolotl)
    echo "== axolotl's validation and preprocessing"
    (cd "$project" && axolotl preprocess config.yaml > "$work/preprocess.log" 2>&1) || { tail -40 "$work/preprocess.log"; exit 1; }
    grep -E "Success|min_input_len|max_input_len" "$work/preprocess.log" || true
    echo "== training $steps steps in axolotl"
    (cd "$project" && axolotl train config.yaml --max-steps "$steps" --eval-steps "$half" \
      --save-steps "$half" > "$work/train.log" 2>&1) || { tail -40 "$work/train.log"; exit 1; }
    ;;
esac
t1=$(date +%s)
grep -oE "\{'(loss|eval_loss|train_runtime)': '[^']*'" "$work/train.log" | tail -6 || true
echo "trained in $((t1 - t0)) s (log: $work/train.log)"

echo "== importing the output"
"$studio" import-run "$project" --runs-dir "$work/runs"
run=$(ls -d "$work"/runs/*-identity-"$engine" | tail -1)
echo "== chatting with the imported adapter ($run)"
"$studio" chat --adapter "$run/adapter" --prompt "Who are you?" --temperature 0 --max-tokens 40 2>/dev/null

if [ "${UPDATE_FIXTURES:-0}" = 1 ]; then
  fx=$root/tests/fixtures/handoff
  mkdir -p "$fx/${engine}_output"
  python "$here/keys.py" "$engine" > "$fx/${engine}_keys.txt"
  out=$project/output
  state=$out/trainer_state.json
  [ -f "$state" ] || state=$(ls -d "$out"/checkpoint-* | sort -t- -k2 -n | tail -1)/trainer_state.json
  cp "$state" "$fx/${engine}_output/trainer_state.json"
  [ ! -f "$out/trainer_log.jsonl" ] || cp "$out/trainer_log.jsonl" "$fx/${engine}_output/"
  echo "fixtures updated in $fx"
fi
echo PASS
