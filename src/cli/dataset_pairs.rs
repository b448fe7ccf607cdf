//! `dataset pairs`: the batch form of rating replies for the identity kind of preference
//! set. Each instruction record's last assistant turn becomes the chosen reply, and a
//! model's own greedy answer to the turns before it (the base, or with `--adapter`) the
//! rejected one; the pairs are written in TRL's message layout, with the model that wrote
//! the rejected reply and its sampling settings kept in each record.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use serde_json::json;

use crate::data::{Encoding, PreferenceFormat, PreferenceLayout, PreferencePair, PreferenceSet};
use crate::infer::{GenerateRequest, Sampling};
use crate::model::ChatMessage;

/// Writes the pairs of `dataset` (after `replace`) to `out`; returns how many it wrote.
pub fn run(
    dataset: &crate::data::Dataset,
    model_spec: &str,
    adapter: Option<&Path>,
    replace: &[(String, String)],
    max_new_tokens: usize,
    out: &Path,
) -> anyhow::Result<usize> {
    let model = super::load_model(model_spec)?;
    let lora = match adapter {
        Some(dir) => Some(
            crate::adapter::read_adapter(dir, model.config(), model.transformer.device())
                .with_context(|| format!("loading the adapter {}", dir.display()))?
                .lora,
        ),
        None => None,
    };
    let sampling = Sampling::greedy();
    let cancel = AtomicBool::new(false);
    let mut pairs = Vec::new();
    let invalid: std::collections::HashSet<usize> = dataset.invalid_records().into_iter().collect();
    let mut same = 0usize;
    for (i, record) in dataset.records().iter().enumerate() {
        let mut c = record.clone();
        c.replace_text(replace);
        let Some(last) = c.messages.last() else {
            continue;
        };
        if invalid.contains(&i) || !last.role.is_trained() {
            continue;
        }
        let chosen = last.clone();
        let prompt = c.messages[..c.messages.len() - 1].to_vec();
        let mut msgs: Vec<ChatMessage> = Vec::new();
        if let Some(s) = &c.system {
            msgs.push(ChatMessage::new("system", s.as_str()));
        }
        msgs.extend(
            prompt
                .iter()
                .map(|m| ChatMessage::new(m.role.as_str(), m.content.as_str())),
        );
        let request = GenerateRequest {
            prompt_ids: model
                .encode_chat(&msgs, true)
                .with_context(|| format!("record {i}: applying the chat template"))?,
            sampling: sampling.clone(),
            max_new_tokens,
            stop_strings: Vec::new(),
        };
        let reply = crate::infer::generate(&model, lora.as_ref(), &request, &cancel, &mut |_| {})
            .with_context(|| format!("record {i}: generating"))?;
        let rejected = reply.text.trim().to_string();
        if rejected == chosen.content.trim() {
            same += 1;
            continue;
        }
        let mut pair = PreferencePair {
            system: c.system.clone(),
            prompt,
            chosen: vec![chosen],
            rejected: vec![crate::data::Message::new(
                crate::data::Role::Assistant,
                rejected,
            )],
            meta: Default::default(),
        };
        pair.meta.insert(
            "rejected_by".into(),
            json!({"model": model.name, "adapter": adapter.map(|a| a.display().to_string()),
                   "sampling": "greedy", "max_new_tokens": max_new_tokens, "seed": sampling.seed}),
        );
        eprintln!("pair {}: {}", pairs.len() + 1, pair.last_user_text());
        pairs.push(pair);
    }
    if same > 0 {
        eprintln!("{same} records skipped: the model already answers them as the data does");
    }
    if pairs.is_empty() {
        anyhow::bail!(
            "no pair was made: no record ends with an assistant turn the model answers differently"
        );
    }
    let n = pairs.len();
    let encoding = match out.extension().and_then(|e| e.to_str()) {
        Some("json") => Encoding::Json,
        _ => Encoding::JsonLines,
    };
    let mut set = PreferenceSet::from_pairs(
        pairs,
        PreferenceFormat::new(PreferenceLayout::TrlConversational, encoding),
    );
    set.save(out, None)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(n)
}
