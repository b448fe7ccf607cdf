//! Preference pairs built from an instruction dataset and a model, for the identity kind
//! of preference tuning: each record's last assistant turn is chosen, and the model's own
//! answer to the turns before it (the base, or with an adapter; greedy unless told
//! otherwise) rejected. `dataset pairs` and the end-to-end tests build their pairs here;
//! each pair carries `data::judgment::pair_meta` (who wrote which reply, the sampling
//! settings and the seed), the same fields the Chat tab's blind A/B writes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::data::judgment::{format_for_path, pair_meta, reply_pair, ReplySource};
use crate::data::{Dataset, PreferencePair, PreferenceSet};
use crate::infer::Sampling;
use crate::model::lora::LoraSet;
use crate::model::{ChatMessage, Model};

/// How the rejected replies are generated.
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// Text replacements applied to each record first (`{{name}}` → a name).
    pub replace: Vec<(String, String)>,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Who wrote the chosen replies (e.g. `dataset identity.json`).
    pub chosen_by: String,
    /// The adapter folder applied to the model, for the record of who wrote the rejected
    /// replies.
    pub adapter: Option<String>,
}

/// The pairs made, and the records that made none.
#[derive(Debug, Default)]
pub struct PairsOutcome {
    pub pairs: Vec<PreferencePair>,
    /// Records the model answered exactly as the data does.
    pub same: usize,
    /// Records the model answered with nothing but white space.
    pub blank: usize,
}

/// Builds a pair from every valid record of `dataset` that ends with an assistant turn;
/// `on_pair` sees each pair as it is made. A record the model answers exactly as the data
/// does, or with a blank reply, makes no pair. `cancel` stops between and within generations.
pub fn build_pairs(
    model: &Model,
    lora: Option<&LoraSet>,
    dataset: &Dataset,
    opts: &PairOptions,
    cancel: &AtomicBool,
    on_pair: &mut dyn FnMut(&PreferencePair),
) -> Result<PairsOutcome, String> {
    let invalid: std::collections::HashSet<usize> = dataset.invalid_records().into_iter().collect();
    let chosen_by = ReplySource::new(opts.chosen_by.clone(), None);
    let rejected_by = ReplySource::new(model.name.clone(), opts.adapter.clone());
    let mut settings = serde_json::to_value(&opts.sampling).map_err(|e| e.to_string())?;
    settings["max_new_tokens"] = opts.max_new_tokens.into();
    let mut out = PairsOutcome::default();
    for (i, record) in dataset.records().iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err("cancelled".into());
        }
        let mut c = record.clone();
        c.replace_text(&opts.replace);
        let Some(last) = c.messages.last() else {
            continue;
        };
        if invalid.contains(&i) || !last.role.is_trained() {
            continue;
        }
        let chosen = last.content.clone();
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
        let reply = crate::infer::chat_reply(
            model,
            lora,
            &msgs,
            &opts.sampling,
            opts.max_new_tokens,
            cancel,
            &mut |_| {},
        )
        .map_err(|e| format!("record {i}: {e}"))?;
        let rejected = reply.text.trim();
        if rejected.is_empty() {
            out.blank += 1;
            continue;
        }
        if rejected == chosen.trim() {
            out.same += 1;
            continue;
        }
        let meta = pair_meta(&chosen_by, &rejected_by, &settings, opts.sampling.seed);
        let pair = reply_pair(c.system.clone(), prompt, &chosen, rejected, meta);
        on_pair(&pair);
        out.pairs.push(pair);
    }
    Ok(out)
}

/// Writes `pairs` to `out` (TRL's message layout; a JSON array for `.json`, else JSON
/// lines), atomically, keeping an older file as `<out>.bak`.
pub fn write_pairs(pairs: Vec<PreferencePair>, out: &Path) -> Result<(), String> {
    let mut set = PreferenceSet::from_pairs(pairs, format_for_path(out));
    set.save(out, None)
        .map_err(|e| format!("writing {}: {e}", out.display()))
}
