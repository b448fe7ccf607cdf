//! Parity with transformers on the default model (SmolLM2-135M-Instruct, the Q4_1 GGUF
//! dequantized to f32: `--precision f32`), and the stored Q4_1 path against that f32 one. The expected values come from `tests/fixtures/peft/`, written by
//! `../shared/anchors/peft/make_fixtures.py`:
//!
//! ```python
//! tok(s, add_special_tokens=False)["input_ids"]                       # tokens.json strings
//! tok.apply_chat_template(conv, tokenize=..., add_generation_prompt=g)  # tokens.json chat
//! torch.topk(model(ids).logits[0, -1], 10)                             # logits.json top10
//! model.generate(ids, max_new_tokens=32, do_sample=False)              # logits.json greedy32
//! ```
//! The tests skip (with a note) when the model has not been fetched; CI fetches it.

mod common;

use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use finetune_studio::infer::{self, GenerateRequest, Sampling};
use finetune_studio::model::{ChatMessage, Forward};

fn messages(v: &serde_json::Value) -> Vec<ChatMessage> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn config_and_special_tokens_match() {
    let m = common::default_model();
    let cfg = common::read_json("peft/config.json");
    let c = m.config();
    assert_eq!(c.hidden_size as u64, cfg["hidden_size"].as_u64().unwrap());
    assert_eq!(
        c.num_hidden_layers as u64,
        cfg["num_hidden_layers"].as_u64().unwrap()
    );
    assert_eq!(
        c.num_key_value_heads as u64,
        cfg["num_key_value_heads"].as_u64().unwrap()
    );
    assert_eq!(c.vocab_size as u64, cfg["vocab_size"].as_u64().unwrap());
    assert!(c.tie_word_embeddings);
    let t = common::read_json("peft/template.json");
    assert_eq!(m.template.source(), t["chat_template"].as_str().unwrap());
    assert_eq!(m.tokenizer.bos_token.as_deref(), t["bos"][0].as_str());
    assert_eq!(m.tokenizer.eos_token.as_deref(), t["eos"][0].as_str());
    assert_eq!(
        m.tokenizer.vocab_size() as u64,
        t["vocab_size"].as_u64().unwrap()
    );
    assert!(m.stop_token_ids.contains(&2));
}

#[test]
fn token_ids_match_transformers() {
    let m = common::default_model();
    let fx = common::read_json("peft/tokens.json");
    for s in fx["strings"].as_array().unwrap() {
        let text = s["text"].as_str().unwrap();
        assert_eq!(
            m.tokenizer.encode(text, false).unwrap(),
            ids(&s["ids"]),
            "tokenizing {text:?}"
        );
        assert_eq!(
            m.tokenizer.decode(&ids(&s["ids"]), false).unwrap(),
            text,
            "decoding {text:?}"
        );
    }
    for c in fx["chat"].as_array().unwrap() {
        let msgs = messages(&c["messages"]);
        let gen = c["add_generation_prompt"].as_bool().unwrap();
        let text = m.template.render(&msgs, gen).unwrap();
        assert_eq!(text, c["text"].as_str().unwrap());
        // The fixture's chat `ids` hold the keys of a BatchEncoding rather than ids, so the
        // rendered chat's ids are checked through logits.json's `prompt_ids` instead.
        if c["ids"]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x.is_u64()))
        {
            assert_eq!(m.encode_chat(&msgs, gen).unwrap(), ids(&c["ids"]));
        }
    }
}

#[test]
fn next_token_logits_and_greedy_continuations_match() {
    let mut m = common::default_model();
    m.transformer = m.transformer.to_f32().unwrap();
    assert!(m.transformer.is_f32());
    let fx = common::read_json("peft/logits.json");
    for case in fx.as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let prompt_ids = m.tokenizer.encode(prompt, false).unwrap();
        assert_eq!(prompt_ids, ids(&case["prompt_ids"]));
        let input = Tensor::new(prompt_ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let h = m.transformer.forward(&input, Forward::default()).unwrap();
        let logits: Vec<f32> = m
            .transformer
            .last_logits(&h)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top10: Vec<u32> = order[..10].iter().map(|&i| i as u32).collect();
        assert_eq!(top10, ids(&case["top10_ids"]), "top-10 ids for {prompt:?}");
        for (id, expected) in case["top10_ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["top10_logits"].as_array().unwrap())
        {
            let got = logits[id.as_u64().unwrap() as usize];
            let want = expected.as_f64().unwrap() as f32;
            assert!(
                (got - want).abs() < 1e-3,
                "logit of {id}: {got} vs transformers {want}"
            );
        }
        let req = GenerateRequest {
            prompt_ids,
            sampling: Sampling::greedy(),
            max_new_tokens: 32,
            stop_strings: vec![],
        };
        let out = infer::generate(&m, None, &req, &AtomicBool::new(false), &mut |_| {}).unwrap();
        let want = ids(&case["greedy32_ids"]);
        // transformers' generate stops at EOS too; compare up to what it produced.
        let n = want
            .iter()
            .position(|id| m.stop_token_ids.contains(id))
            .unwrap_or(want.len());
        assert_eq!(
            out.ids,
            want[..n].to_vec(),
            "greedy continuation of {prompt:?}"
        );
    }
}

#[test]
fn streamed_pieces_concatenate_to_the_text() {
    let m = common::default_model();
    let prompt_ids = m
        .encode_chat(
            &[ChatMessage::new(
                "user",
                "Write three emoji and a Chinese word.",
            )],
            true,
        )
        .unwrap();
    let req = GenerateRequest {
        prompt_ids,
        sampling: Sampling {
            seed: 3,
            ..Sampling::default()
        },
        max_new_tokens: 40,
        stop_strings: vec![],
    };
    let mut pieces = Vec::new();
    let out = infer::generate(&m, None, &req, &AtomicBool::new(false), &mut |p| {
        pieces.push(p.to_string())
    })
    .unwrap();
    assert_eq!(pieces.concat(), out.text);
    // The pieces are the one-shot decode of the same ids cut at character boundaries: a
    // piece that split a character would hold a U+FFFD that the whole text does not.
    let whole = m.tokenizer.decode(&out.ids, true).unwrap();
    assert_eq!(out.text, whole, "pieces {pieces:?}");
    assert!(out.stats.decode_tokens_per_s > 0.0);
}

/// log-softmax of every row of `[n, vocab]` logits.
fn log_probs(logits: &Tensor) -> Vec<Vec<f64>> {
    logits
        .to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            row.iter().map(|&v| v as f64 - lse).collect()
        })
        .collect()
}

/// The file's own Q4_1 blocks (with two-level 8-bit activations) against the same weights
/// in f32:
/// the mean KL divergence of the next-token distributions, at every position of every
/// parity prompt, stays under 1e-3, and the stored path keeps the Q4_1 and Q8_0 blocks.
#[test]
fn the_stored_q4_1_path_stays_within_1e_3_kl_of_f32() {
    let stored = common::default_model();
    let mix = stored.transformer.storage_mix();
    assert_eq!(mix[0].0, "Q4_1", "{mix:?}");
    assert!(mix.iter().any(|(t, _)| *t == "Q8_0"), "{mix:?}");
    let f32_model = stored.transformer.to_f32().unwrap();
    let fx = common::read_json("peft/logits.json");
    let (mut kl_sum, mut positions) = (0f64, 0usize);
    let mut worst = 0f64;
    for case in fx.as_array().unwrap() {
        let prompt_ids = ids(&case["prompt_ids"]);
        let input = Tensor::new(prompt_ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let all = |t: &finetune_studio::model::Transformer| {
            let h = t.forward(&input, Forward::default()).unwrap();
            log_probs(&t.logits(&h.squeeze(0).unwrap()).unwrap())
        };
        let (p, q) = (all(&f32_model), all(&stored.transformer));
        for (p, q) in p.iter().zip(&q) {
            let kl: f64 = p.iter().zip(q).map(|(a, b)| a.exp() * (a - b)).sum();
            kl_sum += kl;
            worst = worst.max(kl);
            positions += 1;
        }
    }
    let mean = kl_sum / positions as f64;
    println!("mean KL {mean:.2e} over {positions} positions, largest {worst:.2e}");
    assert!(mean < 1e-3, "mean KL {mean} over {positions} positions");
}
