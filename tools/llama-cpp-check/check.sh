#!/usr/bin/env bash
# check.sh MODEL.gguf [PROMPT] [N]
#
# Loads MODEL.gguf (as finetune-studio exports it) in llama.cpp and in the studio and
# compares them on one chat prompt, rendered by the studio:
#  1. both decode N tokens greedily; the texts are printed;
#  2. llama.cpp is fed the studio's tokens one by one (teacher-forced) and, at each step,
#     its most likely token is compared with the studio's choice.
# Passes (exit 0) when llama.cpp's top token equals the studio's at 90 % of the steps or
# more and every disagreement is a near-tie: the studio's token within $TIE (default 0.05)
# of llama.cpp's top probability. Greedy paths part at such ties, so step 1 alone says
# little. For q8_0 files use TIE=0.1: llama.cpp also rounds the activations to 8 bits
# there, while the studio computes them in f32. The same holds for any quantized file
# chatted on its stored blocks (the studio's default path): llama.cpp rounds the
# activations to one 8-bit level per block, the studio to two, so use TIE=0.1 there too.
#
# llama.cpp comes from the npm package node-llama-cpp, whose prebuilt CPU binaries need
# no compiler: the first run installs it here (npm install, about 20 s).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
gguf=${1:?usage: check.sh MODEL.gguf [PROMPT] [N]}
prompt=${2:-Who are you?}
n=${3:-32}
studio=${STUDIO:-$here/../../target/release/finetune-studio}
[ -d "$here/node_modules/node-llama-cpp" ] || (cd "$here" && npm install --no-audit --no-fund --ignore-scripts >/dev/null)
ours=$("$studio" chat --model "$gguf" --prompt "$prompt" --temperature 0 --max-tokens "$n" --json 2>/dev/null)
field() { python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])[sys.argv[2]]))' "$ours" "$1"; }
prompt_ids=$(field prompt_ids)
generated_ids=$(field generated_ids)
greedy=$(node "$here/greedy.mjs" "$gguf" "$prompt_ids" "$n")
forced=$(node "$here/teacher.mjs" "$gguf" "$prompt_ids" "$generated_ids")
python3 - "$ours" "$greedy" "$forced" "${TIE:-0.05}" <<'PY'
import json, sys
ours, greedy, steps = (json.loads(a) for a in sys.argv[1:4])
tie = float(sys.argv[4])
print(f"prompt:    {len(ours['prompt_ids'])} tokens")
print(f"studio:    {ours['text']!r}")
print(f"llama.cpp: {greedy['text']!r}")
agree = sum(s["top"] == s["studio"] for s in steps)
gaps = [s["p_top"] - s["p_studio"] for s in steps if s["top"] != s["studio"]]
worst = max(gaps, default=0.0)
print(f"teacher-forced: llama.cpp's top token is the studio's at {agree}/{len(steps)} steps; "
      f"largest probability gap where they differ: {worst:.4f}")
ok = steps and agree >= 0.9 * len(steps) and worst < tie
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
