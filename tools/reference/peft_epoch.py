"""One epoch of LoRA training with PyTorch + transformers + PEFT, the reference for
`cargo run --release --example bench_train -- --epoch FILE`.

The same settings as the studio's epoch: SmolLM2-135M-Instruct from its GGUF (f32, CPU,
2 threads), LoRA r=16 / alpha=32 on all seven linear layers, AdamW lr 2e-4, batch 4, the
chat template applied, loss on the assistant turn only, samples truncated at --seq. As the
usual Trainer + DataCollatorForSeq2Seq setup does, each batch is padded to its longest
sample (no packing); records are taken in a seeded random order.

Usage (from ../shared/anchors/peft, with its venv):
  python /path/to/peft_epoch.py FILE [--records 100] [--seq 512] [--batch 4] [--rank 16]
Prints one JSON line: seconds for the epoch, real (non-padding) tokens, tokens/s over the
epoch, padded tokens, peak RSS."""
import argparse, json, os, random, sys, time

sys.path.insert(0, os.getcwd())
import torch
from peft import LoraConfig, get_peft_model
from common import load, peak_rss_mib, log

ap = argparse.ArgumentParser()
ap.add_argument("file")
ap.add_argument("--records", type=int, default=None)
ap.add_argument("--seq", type=int, default=512)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--rank", type=int, default=16)
a = ap.parse_args()

records = json.load(open(a.file))
if a.records:
    records = records[: a.records]
tok, model = load()


def encode(r):
    user = r["instruction"] + ("\n" + r["input"] if r.get("input") else "")
    prompt = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                     add_generation_prompt=True)
    full = tok.apply_chat_template([{"role": "user", "content": user},
                                    {"role": "assistant", "content": r["output"]}], tokenize=False)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    f = tok(full, add_special_tokens=False)["input_ids"][: a.seq]
    labels = [-100] * min(len(p), len(f)) + f[len(p):]
    return f, labels


samples = [encode(r) for r in records]
random.Random(0).shuffle(samples)
cfg = LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0, task_type="CAUSAL_LM",
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
model = get_peft_model(model, cfg)
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
pad = tok.pad_token_id if tok.pad_token_id is not None else 0
real = padded = 0
t0 = time.perf_counter()
for i in range(0, len(samples), a.batch):
    chunk = samples[i: i + a.batch]
    width = max(len(f) for f, _ in chunk)
    ids = torch.tensor([f + [pad] * (width - len(f)) for f, _ in chunk])
    labels = torch.tensor([l + [-100] * (width - len(l)) for _, l in chunk])
    mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f, _ in chunk])
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    real += sum(len(f) for f, _ in chunk)
    padded += width * len(chunk)
    log(f"batch {i // a.batch} width {width} loss {loss.item():.4f} {time.perf_counter() - t0:.1f}s")
secs = time.perf_counter() - t0
print(json.dumps({"impl": "pytorch+peft", "mode": "epoch", "records": len(samples), "seq": a.seq,
                  "batch": a.batch, "rank": a.rank, "tokens": real, "padded_tokens": padded,
                  "seconds": secs, "tokens_per_s": real / secs, "peak_rss_mib": peak_rss_mib(),
                  "threads": torch.get_num_threads()}))
