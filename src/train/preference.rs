//! The preference stages (`stage = "dpo"` or `"orpo"`): pairs tokenized and laid out for
//! the step loop, the losses as TRL computes them, their gradients, and the evaluation on
//! held-out pairs.
//!
//! A pair becomes two examples (the prompt with the chosen reply, then with the rejected
//! one), trained on the reply's tokens only; `PreparedData::train` holds them interleaved
//! (chosen at `2k`, rejected at `2k + 1`), and each row of a micro-batch is one pair, its
//! chosen sample then its rejected one, so a micro-batch's sample `2k` and `2k + 1` are
//! pair `k`'s. The policy's per-token cross-entropy comes from the same chunked op as SFT;
//! the reference's (DPO) from a forward on the same shared weights with the adapter off, or
//! with the frozen `init_adapter`. The loss and its derivative with respect to each
//! reply's log-probability are computed in f64 ([`dpo_loss`], [`orpo_loss`]), and the
//! backward runs once through `Σ row weight × row cross-entropy`, which has exactly the
//! loss's gradient.

use std::path::Path;

use candle_core::{Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use super::adapter::TrainableAdapter;
use super::batch::{Example, PackedRow};
use super::config::{Reference, RunConfig, Stage};
use super::data::{self, MicroBatch, PreparedData};
use super::events::PreferenceMetrics;
use crate::data::{PreferencePair, PreferenceSet};
use crate::model::lora::LoraSet;
use crate::model::{ChatMessage, Forward, Layout, Model};

/// Loads the run's preference set (a file, or a `ranking: true` entry of a
/// `dataset_info.json`).
pub fn load_pairs(cfg: &RunConfig) -> anyhow::Result<PreferenceSet> {
    let path = &cfg.data.path;
    Ok(match &cfg.data.dataset_info_entry {
        Some(entry) => PreferenceSet::load_dataset_info_entry(path, entry)?,
        None => PreferenceSet::load(path)?,
    })
}

/// Loads, splits and tokenizes the run's pairs: `train` and `eval` hold each kept pair's
/// chosen example then its rejected one. Invalid pairs, and pairs whose replies have no
/// token left to train on after truncation, are skipped and counted.
pub fn prepare(
    cfg: &RunConfig,
    model: &Model,
    log: &mut dyn FnMut(String),
) -> anyhow::Result<PreparedData> {
    let mut set = load_pairs(cfg)?;
    let records = set.len();
    if !cfg.data.replace.is_empty() {
        let n = set
            .pairs
            .iter_mut()
            .map(|p| p.replace_text(&cfg.data.replace))
            .filter(|&changed| changed)
            .count();
        log(format!("replaced placeholders in {n} of {records} pairs"));
    }
    if cfg.data.strip_reasoning {
        let n = set
            .pairs
            .iter_mut()
            .map(|p| {
                let chosen = crate::data::reasoning::strip_messages(&mut p.chosen);
                crate::data::reasoning::strip_messages(&mut p.rejected) || chosen
            })
            .filter(|&changed| changed)
            .count();
        log(format!(
            "removed reasoning blocks from {n} of {records} pairs"
        ));
    }
    let invalid: std::collections::HashSet<usize> = set.invalid_pairs().into_iter().collect();
    if !invalid.is_empty() {
        log(format!(
            "skipping {} invalid pairs (see the dataset's problems list)",
            invalid.len()
        ));
    }
    let split = cfg.split(records);
    let (mut skipped, mut truncated) = (invalid.len(), 0);
    let mut tokenized = |indices: &[usize]| -> anyhow::Result<Vec<Example>> {
        let results: Vec<anyhow::Result<(Example, Example)>> = indices
            .par_iter()
            .filter(|i| !invalid.contains(i))
            .map(|&i| {
                tokenize_pair(model, &set.pairs[i], cfg.data.max_seq_len)
                    .map_err(|e| anyhow::anyhow!("{}: pair {i}: {e:#}", cfg.data.path.display()))
            })
            .collect();
        let mut out = Vec::with_capacity(results.len() * 2);
        for r in results {
            let (c, rj) = r?;
            truncated += usize::from(c.truncated) + usize::from(rj.truncated);
            if c.trained_tokens() == 0 || rj.trained_tokens() == 0 {
                skipped += 1;
                continue;
            }
            out.push(c);
            out.push(rj);
        }
        Ok(out)
    };
    let train = tokenized(&split.train)?;
    let eval = tokenized(&split.eval)?;
    if truncated > 0 {
        log(format!(
            "{truncated} replies (with their prompts) are longer than {} tokens and were truncated",
            cfg.data.max_seq_len
        ));
    }
    if train.is_empty() {
        anyhow::bail!(
            "{}: no preference pair has reply tokens to train on ({records} pairs, {skipped} skipped): check that both replies are there and fit in {} tokens with their prompt",
            cfg.data.path.display(),
            cfg.data.max_seq_len
        );
    }
    Ok(PreparedData {
        train,
        eval,
        records,
        truncated,
        skipped,
        dataset_sha256: data::sha256_file(&cfg.data.path),
    })
}

/// The prompt followed by `reply`, through the chat template, with only the reply's
/// assistant turns marked to train, cut at `max_len` tokens.
fn tokenize_reply(
    model: &Model,
    pair: &PreferencePair,
    reply: &[crate::data::Message],
    max_len: usize,
) -> anyhow::Result<Example> {
    let msgs: Vec<ChatMessage> = pair
        .chat_messages(reply)
        .into_iter()
        .map(|(r, c)| ChatMessage::new(r, c))
        .collect();
    let (text, spans) = model.template.render_with_assistant_spans(&msgs)?;
    let in_prompt = pair
        .prompt
        .iter()
        .filter(|m| m.role.as_str() == "assistant")
        .count();
    let spans = &spans[in_prompt.min(spans.len())..];
    let (mut ids, offsets) = model.tokenizer.encode_with_offsets(&text)?;
    let mut train: Vec<bool> = offsets
        .iter()
        .map(|&(s, e)| spans.iter().any(|sp| s < sp.end && e > sp.start))
        .collect();
    let truncated = ids.len() > max_len;
    if truncated {
        ids.truncate(max_len);
        train.truncate(max_len);
    }
    Ok(Example {
        ids,
        train,
        truncated,
    })
}

/// A pair's chosen and rejected examples.
pub fn tokenize_pair(
    model: &Model,
    pair: &PreferencePair,
    max_len: usize,
) -> anyhow::Result<(Example, Example)> {
    Ok((
        tokenize_reply(model, pair, &pair.chosen, max_len)?,
        tokenize_reply(model, pair, &pair.rejected, max_len)?,
    ))
}

/// One pair as one row: the chosen sample, then the rejected one.
pub fn pair_row(chosen: &Example, rejected: &Example) -> PackedRow {
    let mut row = PackedRow::default();
    row.push(chosen, chosen.ids.len());
    row.push(rejected, rejected.ids.len());
    row
}

/// The rows of one epoch of interleaved pairs, one pair per row, in an order shuffled
/// from `seed + epoch` (as SFT epochs are).
pub fn epoch_rows(examples: &[Example], cfg: &RunConfig, epoch: usize) -> Vec<PackedRow> {
    let mut order: Vec<usize> = (0..examples.len() / 2).collect();
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(cfg.training.seed.wrapping_add(epoch as u64 * 1_000_003));
    order.shuffle(&mut rng);
    order
        .into_iter()
        .map(|k| pair_row(&examples[2 * k], &examples[2 * k + 1]))
        .collect()
}

/// The log-probabilities of one pair's replies: sums over their trained tokens, with the
/// token counts, under the policy and (DPO) the reference.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PairLogps {
    pub chosen: f64,
    pub rejected: f64,
    pub chosen_tokens: usize,
    pub rejected_tokens: usize,
    pub ref_chosen: f64,
    pub ref_rejected: f64,
}

/// A micro-batch's loss, its derivative with respect to each pair's chosen and rejected
/// log-probability sums, and its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct PairLoss {
    pub loss: f64,
    pub d_chosen: Vec<f64>,
    pub d_rejected: Vec<f64>,
    pub metrics: PreferenceMetrics,
}

/// `log σ(x)`, stable for large |x|.
fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

/// `σ(x)`, stable for large |x|.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `log(1 − eˣ)` for x < 0, as TRL's `log1mexp` (branching at −ln 2).
fn log1mexp(x: f64) -> f64 {
    if x < -std::f64::consts::LN_2 {
        (-x.exp()).ln_1p()
    } else {
        (-x.exp_m1()).ln()
    }
}

fn metrics(pairs: usize, rows: impl Iterator<Item = (f64, f64, f64, f64)>) -> PreferenceMetrics {
    let n = pairs.max(1) as f64;
    let mut m = PreferenceMetrics {
        chosen_logp: 0.0,
        rejected_logp: 0.0,
        chosen_reward: 0.0,
        rejected_reward: 0.0,
        reward_margin: 0.0,
        reward_accuracy: 0.0,
        pairs,
    };
    for (lc, lr, rc, rr) in rows {
        m.chosen_logp += lc / n;
        m.rejected_logp += lr / n;
        m.chosen_reward += rc / n;
        m.rejected_reward += rr / n;
        m.reward_margin += (rc - rr) / n;
        m.reward_accuracy += f64::from(u8::from(rc > rr)) / n;
    }
    m
}

/// DPO's sigmoid loss (TRL `loss_type="sigmoid"`, no label smoothing), mean over pairs:
/// `−log σ(β ((π_c − ref_c) − (π_r − ref_r)))` with log-probabilities summed over each
/// reply's tokens; rewards `β (π − ref)`.
pub fn dpo_loss(pairs: &[PairLogps], beta: f64) -> PairLoss {
    let n = pairs.len().max(1) as f64;
    let mut out = PairLoss {
        loss: 0.0,
        d_chosen: Vec::with_capacity(pairs.len()),
        d_rejected: Vec::with_capacity(pairs.len()),
        metrics: metrics(0, std::iter::empty()),
    };
    for p in pairs {
        let z = beta * ((p.chosen - p.ref_chosen) - (p.rejected - p.ref_rejected));
        out.loss -= log_sigmoid(z) / n;
        let g = beta * sigmoid(-z) / n;
        out.d_chosen.push(-g);
        out.d_rejected.push(g);
    }
    out.metrics = metrics(
        pairs.len(),
        pairs.iter().map(|p| {
            (
                p.chosen,
                p.rejected,
                beta * (p.chosen - p.ref_chosen),
                beta * (p.rejected - p.ref_rejected),
            )
        }),
    );
    out
}

/// ORPO (TRL's `ORPOTrainer`): the chosen replies' cross-entropy (mean over their tokens)
/// minus `β · mean log σ(log odds)`, where the log odds compare the replies' mean per-token
/// log-probabilities `a`: `(a_c − a_r) − (log(1 − e^a_c) − log(1 − e^a_r))`; rewards `β a`.
pub fn orpo_loss(pairs: &[PairLogps], beta: f64) -> PairLoss {
    let n = pairs.len().max(1) as f64;
    let chosen_tokens: usize = pairs.iter().map(|p| p.chosen_tokens).sum();
    let t = chosen_tokens.max(1) as f64;
    let mut out = PairLoss {
        loss: -pairs.iter().map(|p| p.chosen).sum::<f64>() / t,
        d_chosen: Vec::with_capacity(pairs.len()),
        d_rejected: Vec::with_capacity(pairs.len()),
        metrics: metrics(0, std::iter::empty()),
    };
    let mean = |sum: f64, tokens: usize| sum / tokens.max(1) as f64;
    for p in pairs {
        let (ac, ar) = (
            mean(p.chosen, p.chosen_tokens),
            mean(p.rejected, p.rejected_tokens),
        );
        let log_odds = (ac - ar) - (log1mexp(ac) - log1mexp(ar));
        out.loss -= beta * log_sigmoid(log_odds) / n;
        // d(−β/n · log σ(L))/dL, and dL/da = ±1 / (1 − eᵃ).
        let g = -beta * sigmoid(-log_odds) / n;
        let dl_dac = -1.0 / ac.exp_m1();
        let dl_dar = 1.0 / ar.exp_m1();
        out.d_chosen
            .push(-1.0 / t + g * dl_dac / p.chosen_tokens.max(1) as f64);
        out.d_rejected
            .push(g * dl_dar / p.rejected_tokens.max(1) as f64);
    }
    out.metrics = metrics(
        pairs.len(),
        pairs.iter().map(|p| {
            let (ac, ar) = (
                mean(p.chosen, p.chosen_tokens),
                mean(p.rejected, p.rejected_tokens),
            );
            (ac, ar, beta * ac, beta * ar)
        }),
    );
    out
}

/// The stage's loss over a micro-batch's pairs.
pub fn pair_loss(stage: Stage, pairs: &[PairLogps], beta: f64) -> PairLoss {
    match stage {
        Stage::Orpo => orpo_loss(pairs, beta),
        _ => dpo_loss(pairs, beta),
    }
}

/// Where each trained position of a micro-batch belongs: `(pair, is_chosen)` per target,
/// in target order, and the number of pairs.
fn target_owners(mb: &MicroBatch) -> anyhow::Result<(Vec<(usize, bool)>, usize)> {
    let segments = mb.segments.flatten_all()?.to_vec1::<u32>()?;
    let samples = segments.iter().max().map_or(0, |m| *m as usize + 1);
    if !samples.is_multiple_of(2) {
        anyhow::bail!("a preference micro-batch holds {samples} samples, not whole pairs");
    }
    let owners = mb
        .targets
        .iter()
        .zip(&segments)
        .filter(|(t, _)| t.is_some())
        .map(|(_, &s)| (s as usize / 2, s.is_multiple_of(2)))
        .collect();
    Ok((owners, samples / 2))
}

/// Sums per-target log-probabilities (`−cross-entropy`) into each pair's chosen and
/// rejected sums and counts.
fn sum_by_pair(
    owners: &[(usize, bool)],
    pairs: usize,
    ce: &[f32],
) -> Vec<(f64, usize, f64, usize)> {
    let mut out = vec![(0f64, 0usize, 0f64, 0usize); pairs];
    for (&(k, chosen), &x) in owners.iter().zip(ce) {
        let p = &mut out[k];
        if chosen {
            p.0 -= x as f64;
            p.1 += 1;
        } else {
            p.2 -= x as f64;
            p.3 += 1;
        }
    }
    out
}

/// The final hidden states of a micro-batch (no gradients), with `lora` or none.
fn hidden_no_grad(
    model: &Model,
    lora: Option<&LoraSet>,
    mb: &MicroBatch,
) -> anyhow::Result<Tensor> {
    let h = model.transformer.forward(
        &mb.ids,
        Forward {
            lora,
            layout: Layout::Packed {
                positions: mb.positions.clone(),
                segments: mb.segments.clone(),
            },
            ..Default::default()
        },
    )?;
    Ok(h.reshape((mb.targets.len(), model.config().hidden_size))?)
}

/// Per-pair reference log-probability sums (DPO), or zeros (ORPO needs none).
fn reference_sums(
    model: &Model,
    stage: Stage,
    reference: Option<&LoraSet>,
    mb: &MicroBatch,
    owners: &[(usize, bool)],
    pairs: usize,
) -> anyhow::Result<Vec<(f64, f64)>> {
    if stage != Stage::Dpo {
        return Ok(vec![(0.0, 0.0); pairs]);
    }
    let hidden = hidden_no_grad(model, reference, mb)?;
    let ce = super::loss::token_losses(&model.transformer, &hidden, &mb.targets)?;
    Ok(sum_by_pair(owners, pairs, &ce)
        .into_iter()
        .map(|(c, _, r, _)| (c, r))
        .collect())
}

fn pair_logps(policy: &[(f64, usize, f64, usize)], reference: &[(f64, f64)]) -> Vec<PairLogps> {
    policy
        .iter()
        .zip(reference)
        .map(|(&(c, nc, r, nr), &(rc, rr))| PairLogps {
            chosen: c,
            rejected: r,
            chosen_tokens: nc,
            rejected_tokens: nr,
            ref_chosen: rc,
            ref_rejected: rr,
        })
        .collect()
}

/// Merges figures of several micro-batches, weighted by their pairs.
pub fn merge_metrics(parts: &[PreferenceMetrics]) -> Option<PreferenceMetrics> {
    let pairs: usize = parts.iter().map(|m| m.pairs).sum();
    if pairs == 0 {
        return None;
    }
    let w = |f: fn(&PreferenceMetrics) -> f64| {
        parts.iter().map(|m| f(m) * m.pairs as f64).sum::<f64>() / pairs as f64
    };
    Some(PreferenceMetrics {
        chosen_logp: w(|m| m.chosen_logp),
        rejected_logp: w(|m| m.rejected_logp),
        chosen_reward: w(|m| m.chosen_reward),
        rejected_reward: w(|m| m.rejected_reward),
        reward_margin: w(|m| m.reward_margin),
        reward_accuracy: w(|m| m.reward_accuracy),
        pairs,
    })
}

/// What one optimizer step of a preference run computed.
pub struct StepGradients {
    /// Each adapter tensor's gradient, in `named`'s order (`None`: nothing trained).
    pub grads: Option<Vec<Tensor>>,
    /// The step's loss: the mean of its micro-batches' losses (as TRL's accumulation).
    pub loss: f64,
    pub metrics: Option<PreferenceMetrics>,
}

/// The loss and adapter gradients of one optimizer step's micro-batches (each a set of
/// pair rows). `seed(j)` is micro-batch `j`'s dropout seed; `reference` is the frozen
/// adapter DPO compares against (`None`: the base).
pub fn accumulated_gradients(
    model: &Model,
    adapter: &TrainableAdapter,
    named: &[(String, Var)],
    group: &[MicroBatch],
    cfg: &RunConfig,
    reference: Option<&LoraSet>,
    seed: impl Fn(usize) -> u64,
) -> anyhow::Result<StepGradients> {
    let live = group.iter().filter(|mb| mb.trained_tokens > 0).count();
    let mut out = StepGradients {
        grads: None,
        loss: 0.0,
        metrics: None,
    };
    let mut parts = Vec::new();
    for (j, mb) in group.iter().enumerate() {
        if mb.trained_tokens == 0 {
            continue;
        }
        let (owners, pairs) = target_owners(mb)?;
        let refs = reference_sums(model, cfg.stage, reference, mb, &owners, pairs)?;
        let hidden = super::trainer::hidden_states(model, &adapter.lora_set(), mb, Some(seed(j)))?;
        let ce = super::loss::cross_entropy_rows_differentiable(
            &model.transformer,
            &hidden,
            &mb.targets,
        )?;
        let values = ce.to_vec1::<f32>()?;
        let logps = pair_logps(&sum_by_pair(&owners, pairs, &values), &refs);
        let pl = pair_loss(cfg.stage, &logps, cfg.preference.beta);
        let scale = 1.0 / live as f64;
        out.loss += pl.loss * scale;
        parts.push(pl.metrics);
        // logp = −ce, so d loss / d ce_row = −d loss / d logp of the row's reply.
        let weights: Vec<f32> = owners
            .iter()
            .map(|&(k, chosen)| {
                let d = if chosen {
                    pl.d_chosen[k]
                } else {
                    pl.d_rejected[k]
                };
                (-d * scale) as f32
            })
            .collect();
        let w = Tensor::from_vec(weights, values.len(), ce.device())?;
        let store = (ce * w)?.sum_all()?.backward()?;
        let g: Vec<Tensor> = named
            .iter()
            .map(|(_, v)| match store.get(v.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => v.as_tensor().zeros_like(),
            })
            .collect::<candle_core::Result<_>>()?;
        out.grads = Some(match out.grads.take() {
            None => g,
            Some(acc) => acc
                .iter()
                .zip(&g)
                .map(|(a, b)| a + b)
                .collect::<candle_core::Result<_>>()?,
        });
    }
    out.metrics = merge_metrics(&parts);
    Ok(out)
}

/// The stage's loss on the held-out pairs with the adapter's current values, and its
/// figures (reward accuracy above all); `None` when there are none.
pub fn evaluate(
    model: &Model,
    adapter: &TrainableAdapter,
    reference: Option<&LoraSet>,
    prepared: &PreparedData,
    cfg: &RunConfig,
) -> anyhow::Result<Option<(f64, PreferenceMetrics)>> {
    let rows: Vec<PackedRow> = prepared
        .eval
        .chunks_exact(2)
        .map(|p| pair_row(&p[0], &p[1]))
        .collect();
    let lora = adapter.lora_set();
    let (mut loss, mut parts) = (0f64, Vec::new());
    for chunk in rows.chunks(cfg.training.batch_size.max(1)) {
        let mb = data::micro_batch(chunk, model.transformer.device())?;
        let pl = crate::ops::runtime::with_pool_awake(|| -> anyhow::Result<PairLoss> {
            let (owners, pairs) = target_owners(&mb)?;
            let refs = reference_sums(model, cfg.stage, reference, &mb, &owners, pairs)?;
            let hidden = hidden_no_grad(model, Some(&lora), &mb)?;
            let ce = super::loss::token_losses(&model.transformer, &hidden, &mb.targets)?;
            let logps = pair_logps(&sum_by_pair(&owners, pairs, &ce), &refs);
            Ok(pair_loss(cfg.stage, &logps, cfg.preference.beta))
        })?;
        loss += pl.loss * pl.metrics.pairs as f64;
        parts.push(pl.metrics);
    }
    Ok(merge_metrics(&parts).map(|m| (loss / m.pairs as f64, m)))
}

/// Starts the adapter from `init_adapter` when the config names one (its rank, alpha and
/// targets must be the run's), and returns the frozen reference DPO measures against when
/// it is that adapter (`None`: the base, adapter off).
pub fn apply_init_adapter(
    cfg: &RunConfig,
    model: &Model,
    adapter: &mut TrainableAdapter,
) -> anyhow::Result<Option<LoraSet>> {
    let Some(dir) = &cfg.init_adapter else {
        return Ok(None);
    };
    check_init_adapter(dir, cfg)?;
    let device = model.transformer.device();
    adapter.load_values(dir, model.config(), device)?;
    if cfg.stage == Stage::Dpo && cfg.preference.reference == Reference::InitAdapter {
        let loaded = crate::adapter::read_adapter(dir, model.config(), device)?;
        return Ok(Some(loaded.lora));
    }
    Ok(None)
}

/// Refuses an `init_adapter` whose shape is not the run's, naming what differs.
fn check_init_adapter(dir: &Path, cfg: &RunConfig) -> anyhow::Result<()> {
    let a = crate::adapter::read_adapter_config(dir)?;
    let l = &cfg.lora;
    if a.r != l.rank || (a.lora_alpha - l.alpha).abs() > 1e-9 || a.use_rslora != l.use_rslora {
        anyhow::bail!(
            "{}: init_adapter has r = {}, alpha = {}, rslora = {}; the run has rank = {}, alpha = {}, use_rslora = {} (set [lora] to match)",
            dir.display(),
            a.r,
            a.lora_alpha,
            a.use_rslora,
            l.rank,
            l.alpha,
            l.use_rslora
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(c: f64, r: f64, rc: f64, rr: f64) -> PairLogps {
        PairLogps {
            chosen: c,
            rejected: r,
            chosen_tokens: 4,
            rejected_tokens: 5,
            ref_chosen: rc,
            ref_rejected: rr,
        }
    }

    /// Each derivative against a central difference of the loss.
    fn check_derivatives(f: impl Fn(&[PairLogps]) -> PairLoss, pairs: &[PairLogps]) {
        let base = f(pairs);
        let h = 1e-6;
        for k in 0..pairs.len() {
            for chosen in [true, false] {
                let at = |d: f64| {
                    let mut p = pairs.to_vec();
                    if chosen {
                        p[k].chosen += d;
                    } else {
                        p[k].rejected += d;
                    }
                    f(&p).loss
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                let exact = if chosen {
                    base.d_chosen[k]
                } else {
                    base.d_rejected[k]
                };
                assert!(
                    (numeric - exact).abs() < 1e-6,
                    "pair {k} chosen {chosen}: {numeric} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn dpo_starts_at_ln2_and_its_derivatives_are_exact() {
        let same = [pair(-10.0, -12.0, -10.0, -12.0)];
        let l = dpo_loss(&same, 0.1);
        assert!((l.loss - std::f64::consts::LN_2).abs() < 1e-12);
        assert_eq!(l.metrics.reward_accuracy, 0.0);
        let pairs = [
            pair(-8.0, -14.0, -10.0, -12.0),
            pair(-20.0, -3.0, -19.0, -4.0),
        ];
        let l = dpo_loss(&pairs, 0.5);
        assert_eq!(l.metrics.reward_accuracy, 0.5);
        assert!((l.metrics.chosen_reward - 0.5 * (2.0 - 1.0) / 2.0).abs() < 1e-12);
        check_derivatives(|p| dpo_loss(p, 0.5), &pairs);
    }

    #[test]
    fn orpo_derivatives_are_exact() {
        let pairs = [pair(-3.0, -9.0, 0.0, 0.0), pair(-1.5, -0.8, 0.0, 0.0)];
        let l = orpo_loss(&pairs, 0.25);
        assert!(l.loss.is_finite());
        assert!((l.metrics.chosen_logp - (-3.0 / 4.0 - 1.5 / 4.0) / 2.0).abs() < 1e-12);
        check_derivatives(|p| orpo_loss(p, 0.25), &pairs);
        assert!((log1mexp(-0.1) - (1.0 - (-0.1f64).exp()).ln()).abs() < 1e-12);
        assert!((log1mexp(-5.0) - (1.0 - (-5.0f64).exp()).ln()).abs() < 1e-12);
    }
}
