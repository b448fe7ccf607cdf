"""DPO and ORPO losses, their figures and the LoRA adapter's gradients as TRL's trainers
compute them, in PyTorch + PEFT on a tiny Llama: the reference for
`tests/train_preference_parity.rs`.

Writes `tests/fixtures/preference/`:
  model/     a tiny random Llama (config.json, model.safetensors; the test adds the
             studio's tiny tokenizer, which these token ids do not need)
  adapter/   a PEFT LoRA adapter (r=4, alpha=8, all seven projections) with random A and
             B, so the policy differs from the base (the DPO reference: adapter off)
  expected.json  the pairs as token ids (prompt, chosen, rejected), and per stage: beta,
             loss, the figures TRL logs, and every lora_A / lora_B gradient

The formulas are TRL 1.16's:
  DPO (trl/trainer/dpo_trainer.py, loss_type="sigmoid", f_divergence "reverse_kl"):
    logps = per-token log-probs of the completion summed; ref logps with the adapter off
    (`use_adapter(model, None)`, i.e. `disable_adapter`);
    loss = mean(-logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))));
    rewards = beta * (pi - ref); accuracy = mean(reward_c > reward_r).
  ORPO (trl/experimental/orpo/orpo_trainer.py): average per-token log-probs a;
    log_odds = (a_c - a_r) - (log1mexp(a_c) - log1mexp(a_r));
    loss = NLL(chosen tokens, mean over all of them) - mean(beta * logsigmoid(log_odds));
    rewards = beta * a.

Usage (the venv with torch, transformers and peft):
  python tools/reference/preference_losses.py tests/fixtures/preference
"""
import json, math, os, sys

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/preference"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(1)

cfg = LlamaConfig(vocab_size=264, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                  rope_theta=10000.0, max_position_embeddings=2048, tie_word_embeddings=True,
                  bos_token_id=257, eos_token_id=258, attention_bias=False, mlp_bias=False,
                  torch_dtype="float32")
model = LlamaForCausalLM(cfg).float()
# Weights of a scale that gives the logits some spread (HF's 0.02 init is near uniform).
with torch.no_grad():
    for name, p in model.named_parameters():
        if "norm" in name:
            p.copy_(1.0 + 0.1 * torch.randn_like(p))
        elif "embed_tokens" in name:
            p.copy_(0.5 * torch.randn_like(p))
        else:
            p.copy_(torch.randn_like(p) / math.sqrt(p.shape[1]))
model.save_pretrained(os.path.join(out, "model"), safe_serialization=True)

targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
model = get_peft_model(model, lcfg)
with torch.no_grad():
    for name, p in model.named_parameters():
        if "lora_A" in name or "lora_B" in name:
            p.copy_(0.1 * torch.randn_like(p))
model.save_pretrained(os.path.join(out, "adapter"))
os.remove(os.path.join(out, "adapter", "README.md"))  # the model card PEFT adds
model.eval()  # no dropout anywhere; gradients still flow

g = torch.Generator().manual_seed(1)
def ids(n):
    return torch.randint(0, 256, (n,), generator=g).tolist()
# (prompt, chosen, rejected) token ids of two pairs, replies of unequal lengths.
pairs = [(ids(5), ids(4), ids(3)), (ids(3), ids(6), ids(5))]


def seq_logps(prompt, reply):
    """Sum of the reply's per-token log-probs and its token count (TRL's get_batch_logps
    on one unpadded row: logits[:-1] predict ids[1:], labels -100 on the prompt)."""
    x = torch.tensor([prompt + reply])
    logits = model(input_ids=x).logits[0, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(1, x[0, 1:, None])[:, 0]
    mask = torch.tensor([i + 1 >= len(prompt) for i in range(x.shape[1] - 1)])
    return (lp * mask).sum(), int(mask.sum())


def log1mexp(x):
    t = -0.6931471805599453
    return torch.where(x < t, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def lora_grads():
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            grads[name.replace(".default", "")] = p.grad.flatten().tolist()
    model.zero_grad(set_to_none=True)
    return grads


def figures(lc, lr, rc, rr, n):
    return {"chosen_logp": (lc.sum() / n).item(), "rejected_logp": (lr.sum() / n).item(),
            "chosen_reward": (rc.sum() / n).item(), "rejected_reward": (rr.sum() / n).item(),
            "reward_margin": ((rc - rr).sum() / n).item(),
            "reward_accuracy": (rc > rr).float().mean().item()}


expected = {"pairs": [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in pairs]}

# DPO
beta = 0.2
pol = [(seq_logps(p, c), seq_logps(p, r)) for p, c, r in pairs]
with torch.no_grad(), model.disable_adapter():
    ref = [(seq_logps(p, c)[0], seq_logps(p, r)[0]) for p, c, r in pairs]
pc = torch.stack([x[0][0] for x in pol]); pr = torch.stack([x[1][0] for x in pol])
rc_ = torch.stack([x[0] for x in ref]); rr_ = torch.stack([x[1] for x in ref])
delta = (pc - rc_) - (pr - rr_)
loss = (-F.logsigmoid(beta * delta)).mean()
loss.backward()
expected["dpo"] = {"beta": beta, "loss": loss.item(),
                   "metrics": figures(pc.detach(), pr.detach(), beta * (pc - rc_).detach(),
                                      beta * (pr - rr_).detach(), len(pairs)),
                   "grads": lora_grads()}

# ORPO
beta = 0.25
pol = [(seq_logps(p, c), seq_logps(p, r)) for p, c, r in pairs]
sc = torch.stack([x[0][0] for x in pol]); sr = torch.stack([x[1][0] for x in pol])
nc = torch.tensor([x[0][1] for x in pol], dtype=torch.float32)
nr = torch.tensor([x[1][1] for x in pol], dtype=torch.float32)
ac, ar = sc / nc, sr / nr
log_odds = (ac - ar) - (log1mexp(ac) - log1mexp(ar))
nll = -sc.sum() / nc.sum()
loss = nll - (beta * F.logsigmoid(log_odds)).mean()
loss.backward()
expected["orpo"] = {"beta": beta, "loss": loss.item(),
                    "metrics": figures(ac.detach(), ar.detach(), beta * ac.detach(),
                                       beta * ar.detach(), len(pairs)),
                    "grads": lora_grads()}

with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f)
print(json.dumps({k: expected[k]["loss"] for k in ("dpo", "orpo")}))
