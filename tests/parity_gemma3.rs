//! Parity with transformers on Gemma 3 270M (the base model's Q4_K_M GGUF, fetched from its
//! PyPI part packages), dequantized to f32 (`--precision f32`), and the stored K-quant
//! path against that f32 one. The expected values come from `tests/fixtures/gemma3/`,
//! written by `tools/reference/gemma3_fixtures.py` (transformers 5.25, `gguf_file=`):
//!
//! ```python
//! tok(s, add_special_tokens=False)["input_ids"]                     # tokens.json strings
//! tok(tok.apply_chat_template(conv, tokenize=False, ...))           # tokens.json chat
//! torch.topk(model(tok(p).input_ids).logits[0, -1], 10)             # logits.json top10
//! model.generate(ids, max_new_tokens=32, do_sample=False)           # logits.json greedy32
//! ```
//! The last prompt is 823 tokens, past the 512-token window of the sliding layers.

mod common;

use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use finetune_studio::infer::{self, GenerateRequest, Sampling};
use finetune_studio::model::config::{Architecture, LayerKind};
use finetune_studio::model::{ChatMessage, Forward};

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn messages(v: &serde_json::Value) -> Vec<ChatMessage> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

#[test]
fn config_matches_what_transformers_reads() {
    let m = common::gemma3_model();
    let fx = common::read_json("gemma3/config.json");
    let c = m.config();
    assert_eq!(c.architecture, Architecture::Gemma3);
    let n = |k: &str| fx[k].as_u64().unwrap() as usize;
    assert_eq!(c.hidden_size, n("hidden_size"));
    assert_eq!(c.intermediate_size, n("intermediate_size"));
    assert_eq!(c.num_hidden_layers, n("num_hidden_layers"));
    assert_eq!(c.num_attention_heads, n("num_attention_heads"));
    assert_eq!(c.num_key_value_heads, n("num_key_value_heads"));
    assert_eq!(c.head_dim, n("head_dim"));
    assert_eq!(c.vocab_size, n("vocab_size"));
    assert_eq!(c.style.sliding_window, Some(n("sliding_window")));
    assert_eq!(
        c.style.query_pre_attn_scalar,
        fx["query_pre_attn_scalar"].as_f64()
    );
    assert!((c.rms_norm_eps - fx["rms_norm_eps"].as_f64().unwrap()).abs() < 1e-12);
    let kinds: Vec<&str> = fx["layer_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = (0..c.num_hidden_layers)
        .map(|i| c.style.layer_kind(i).hf_name())
        .collect();
    assert_eq!(ours, kinds);
    let rope = &fx["rope_parameters"];
    assert_eq!(
        c.rope_theta as f64,
        rope["full_attention"]["rope_theta"].as_f64().unwrap()
    );
    assert_eq!(
        c.style.rope_local_theta.map(f64::from),
        rope["sliding_attention"]["rope_theta"].as_f64()
    );
    assert_eq!(c.style.rope_linear_factor, None);
    assert!(c.tie_word_embeddings && m.transformer.ties_embeddings());
    assert_eq!(c.style.layer_kind(5), LayerKind::Full);
    // The storage types the issue names, kept as the file stores them.
    let mix: Vec<&str> = m
        .transformer
        .storage_mix()
        .iter()
        .map(|(t, _)| *t)
        .collect();
    for t in ["Q8_0", "Q5_0", "Q4_K", "Q6_K"] {
        assert!(mix.contains(&t), "{t} missing from {mix:?}");
    }
}

#[test]
fn tokens_template_and_stop_tokens_match() {
    let m = common::gemma3_model();
    let fx = common::read_json("gemma3/tokens.json");
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
    // The GGUF (a base model) has no template: the built-in Gemma one renders as
    // transformers renders it.
    assert!(
        m.template.source_name().contains("Gemma"),
        "{}",
        m.template.source_name()
    );
    for case in fx["chat"].as_array().unwrap() {
        let msgs = messages(&case["messages"]);
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let text = m.template.render(&msgs, gen).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap());
        assert_eq!(m.encode_chat(&msgs, gen).unwrap(), ids(&case["ids"]));
    }
    let end_of_turn = m.tokenizer.token_to_id("<end_of_turn>").unwrap();
    assert_eq!(end_of_turn, 106);
    assert_eq!(m.tokenizer.token_to_id("<start_of_turn>"), Some(105));
    assert!(
        m.stop_token_ids.contains(&end_of_turn),
        "{:?}",
        m.stop_token_ids
    );
    assert!(m.stop_token_ids.contains(&1), "{:?}", m.stop_token_ids);
    // A reply ends at the marker: the assistant spans training masks with end there.
    let (text, spans) = m
        .template
        .render_with_assistant_spans(&[
            ChatMessage::new("user", "hi"),
            ChatMessage::new("assistant", "hello"),
        ])
        .unwrap();
    assert_eq!(&text[spans[0].clone()], "hello<end_of_turn>\n");
}

#[test]
fn next_token_logits_and_greedy_continuations_match() {
    let mut m = common::gemma3_model();
    m.transformer = m.transformer.to_f32().unwrap();
    assert!(m.transformer.is_f32());
    let fx = common::read_json("gemma3/logits.json");
    for case in fx.as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        // As `chat --raw` sends it: the tokenizer's default, with <bos>.
        let prompt_ids = m.tokenizer.encode(prompt, true).unwrap();
        assert_eq!(prompt_ids, ids(&case["prompt_ids"]), "ids of {prompt:?}");
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
                "logit of {id} after {} tokens: {got} vs transformers {want}",
                prompt_ids.len()
            );
        }
        assert_eq!(top10, ids(&case["top10_ids"]), "top-10 ids for {prompt:?}");
        let req = GenerateRequest {
            prompt_ids,
            sampling: Sampling::greedy(),
            max_new_tokens: 32,
            stop_strings: vec![],
        };
        let out = infer::generate(&m, None, &req, &AtomicBool::new(false), &mut |_| {}).unwrap();
        let want = ids(&case["greedy32_ids"]);
        // transformers' generate stops at EOS only; the studio at <end_of_turn> too.
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

/// log-softmax of one row of logits.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + row
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln();
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// The file's own blocks (Q5_0, Q4_K, Q6_K, Q8_0, with 8-bit activations) against the same
/// weights in f32: the next-token distributions after each parity prompt stay close (mean
/// KL under 0.01), and the prefill + decode steps through the window agree with one
/// forward over the whole sequence.
#[test]
fn the_stored_path_stays_close_to_f32_and_decode_agrees_with_prefill() {
    let stored = common::gemma3_model();
    let f32_model = stored.transformer.to_f32().unwrap();
    let fx = common::read_json("gemma3/logits.json");
    let mut kls = Vec::new();
    for case in fx.as_array().unwrap() {
        let prompt_ids = ids(&case["prompt_ids"]);
        let input = Tensor::new(prompt_ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let last = |t: &finetune_studio::model::Transformer| -> Vec<f32> {
            let h = t.forward(&input, Forward::default()).unwrap();
            t.last_logits(&h)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (p, q) = (
            log_softmax(&last(&f32_model)),
            log_softmax(&last(&stored.transformer)),
        );
        kls.push(
            p.iter()
                .zip(&q)
                .map(|(a, b)| a.exp() * (a - b))
                .sum::<f64>(),
        );
    }
    let mean = kls.iter().sum::<f64>() / kls.len() as f64;
    assert!(mean < 1e-2, "KL per prompt {kls:?}");

    // The long prompt, cut at 700 tokens, then 20 tokens one at a time through the KV
    // cache: each step's logits equal those of the whole sequence's forward pass.
    let long = ids(&fx.as_array().unwrap()[3]["prompt_ids"]);
    let (cut, steps) = (700, 20);
    assert!(long.len() >= cut + steps && cut > 512);
    let whole = Tensor::new(&long[..cut + steps], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let h = f32_model.forward(&whole, Forward::default()).unwrap();
    let reference = f32_model.logits(&h.squeeze(0).unwrap()).unwrap();
    let mut cache = finetune_studio::model::Cache::new(&f32_model.config);
    let prefix = Tensor::new(&long[..cut], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    f32_model
        .forward(
            &prefix,
            Forward {
                cache: Some(&mut cache),
                ..Default::default()
            },
        )
        .unwrap();
    for (i, &id) in long[cut..cut + steps].iter().enumerate() {
        let x = Tensor::new(&[id], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let h = f32_model
            .forward(
                &x,
                Forward {
                    cache: Some(&mut cache),
                    ..Default::default()
                },
            )
            .unwrap();
        let step = f32_model.logits(&h.squeeze(0).unwrap()).unwrap();
        let want = reference.narrow(0, cut + i, 1).unwrap();
        let diff = common::max_abs_diff(&step, &want);
        assert!(diff < 2e-3, "decode step {i} after {cut}: max |Δ| {diff}");
    }
}
