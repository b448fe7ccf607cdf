"""lf_tokens.py PROJECT STUDIO_JSON...

Renders each prompt of the studio's `chat --json` outputs with LLaMA-Factory's template for
the project (what `train.yaml` makes it use: the tokenizer's own chat template, parsed) and
compares the token ids with the studio's. Exits 1 on any difference."""
import json
import sys
from pathlib import Path

import yaml
from transformers import AutoTokenizer

from llamafactory.data.template import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments

project = Path(sys.argv[1])
cfg = yaml.safe_load((project / "train.yaml").read_text())
tok = AutoTokenizer.from_pretrained(project / cfg["model_name_or_path"])
template = get_template_and_fix_tokenizer(tok, DataArguments(template=cfg.get("template")))
bad = 0
for arg in sys.argv[2:]:
    ours = json.loads(arg)
    prompt = tok.decode(ours["prompt_ids"])
    user = prompt.split("<|im_start|>user\n")[-1].split("<|im_end|>")[0]
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": ""}]
    lf_prompt, _ = template.encode_oneturn(tok, messages)
    same = lf_prompt == ours["prompt_ids"]
    bad += not same
    print(f"{user!r}: {len(lf_prompt)} tokens in LLaMA-Factory, {len(ours['prompt_ids'])} in the studio: "
          f"{'same ids' if same else 'DIFFERENT'}")
    if not same:
        print("  LLaMA-Factory:", repr(tok.decode(lf_prompt)))
        print("  studio:       ", repr(prompt))
sys.exit(1 if bad else 0)
