#!/usr/bin/env bash
# check.sh [STEPS]
#
# The hand-off to LLaMA-Factory with the real engine, on the CPU:
#  1. installs LLaMA-Factory (PyPI `llamafactory`) in its own virtual environment
#     ($LF_VENV, default /tmp/lfenv);
#  2. exports the identity run (examples/identity.toml) as a LLaMA-Factory project with the
#     base model's weights in it (`export-run --write-base --cpu`);
#  3. checks that LLaMA-Factory renders prompts to the same token ids as the studio
#     (lf_tokens.py against `finetune-studio chat --json`);
#  4. trains it there for STEPS optimizer steps (default 12; `max_steps=` on the command
#     line, the project itself unchanged);
#  5. imports the output as a run and chats with its adapter.
# With UPDATE_FIXTURES=1 it also rewrites tests/fixtures/handoff/ from this run: the keys
# LLaMA-Factory's parser accepts and the trainer_state.json / trainer_log.jsonl it wrote.
#
# Needs the release build (cargo build --release) and the default model (fetch-model).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
steps=${1:-12}
venv=${LF_VENV:-/tmp/lfenv}
studio=${STUDIO:-$root/target/release/finetune-studio}
work=${WORK:-$(mktemp -d /tmp/lf-check.XXXXXX)}
if [ ! -x "$venv/bin/llamafactory-cli" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "llamafactory==${LF_VERSION:-0.9.5}"
fi
"$venv/bin/python" -c 'import llamafactory, torch, transformers, peft; print("llamafactory", llamafactory.__version__, "torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'

project=$work/project
rm -rf "$project"
"$studio" export-run --config "$root/examples/identity.toml" --to llamafactory \
  --out "$project" --write-base --cpu

echo "== token ids: LLaMA-Factory's template against the studio's"
ours=()
for prompt in "Who are you?" "What can you do for me?"; do
  ours+=("$("$studio" chat --prompt "$prompt" --temperature 0 --max-tokens 1 --json 2>/dev/null)")
done
"$venv/bin/python" "$here/lf_tokens.py" "$project" "${ours[@]}"

echo "== training $steps steps in LLaMA-Factory"
t0=$(date +%s)
(cd "$project" && NPROC_PER_NODE=1 CUDA_VISIBLE_DEVICES= PATH="$venv/bin:$PATH" \
  llamafactory-cli train train.yaml max_steps="$steps" eval_steps=$(( (steps + 1) / 2 )) \
  save_steps=$(( (steps + 1) / 2 )) > "$work/train.log" 2>&1) || { tail -40 "$work/train.log"; exit 1; }
t1=$(date +%s)
grep -E "'loss'|'eval_loss'|train_runtime" "$work/train.log" | tail -8 || true
echo "trained in $((t1 - t0)) s (log: $work/train.log)"

echo "== importing the output"
"$studio" import-run "$project/output" --runs-dir "$work/runs"
run=$(ls -d "$work"/runs/*-identity-llamafactory | tail -1)
echo "== chatting with the imported adapter ($run)"
"$studio" chat --adapter "$run/adapter" --prompt "Who are you?" --temperature 0 --max-tokens 40

if [ "${UPDATE_FIXTURES:-0}" = 1 ]; then
  fx=$root/tests/fixtures/handoff
  mkdir -p "$fx/llamafactory_output"
  "$venv/bin/python" "$here/lf_keys.py" > "$fx/llamafactory_keys.txt"
  cp "$project/output/trainer_state.json" "$project/output/trainer_log.jsonl" "$fx/llamafactory_output/"
  echo "fixtures updated in $fx"
fi
echo PASS
