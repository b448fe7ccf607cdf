//! The step loop: forward through the transformer with the adapter, chunked loss over the
//! trained tokens, backward (gradients for the adapter only), clipping, AdamW, schedule;
//! metrics, evaluation, checkpoints, pause/stop, and the NaN guard. Runs on the caller's
//! thread (the training worker) and reports through a callback.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;

use super::adapter::TrainableAdapter;
use super::config::RunConfig;
use super::data::{self, MicroBatch, PreparedData};
use super::events::{StepMetrics, Summary, TrainCommand, TrainEvent};
use super::optim::{self, AdamW};
use super::run_dir::{MetricLine, RunDir, TrainerState};
use crate::model::{Forward, Layout, Model};

/// Where a run starts from.
pub enum Start {
    Fresh,
    /// Resume from `checkpoints/step-N/` of an existing run directory.
    Resume {
        run: RunDir,
        checkpoint: std::path::PathBuf,
    },
}

/// How the loop talks to its watcher. `Send`, since the loop runs on a pool thread of its
/// own ([`crate::sys::on_own_pool`]).
pub trait Control: Send {
    fn send(&mut self, event: TrainEvent);
    /// A command, if one is waiting (never blocks).
    fn poll(&mut self) -> Option<TrainCommand>;
    /// Blocks until the next command (while paused); `None` when the watcher is gone.
    fn wait(&mut self) -> Option<TrainCommand>;
}

/// Micro-batches of one epoch.
fn epoch_batches(
    prepared: &PreparedData,
    cfg: &RunConfig,
    epoch: usize,
) -> Vec<Vec<super::batch::PackedRow>> {
    let rows = data::epoch_rows(&prepared.train, cfg, epoch);
    rows.chunks(cfg.training.batch_size)
        .map(|c| c.to_vec())
        .collect()
}

/// Optimizer steps of the whole run.
pub fn total_steps(cfg: &RunConfig, micro_batches_per_epoch: usize) -> usize {
    let per_epoch = micro_batches_per_epoch
        .div_ceil(cfg.training.grad_accumulation)
        .max(1);
    match cfg.training.max_steps {
        Some(s) => s.max(1),
        None => ((cfg.training.epochs * per_epoch as f64).ceil() as usize).max(1),
    }
}

/// The final hidden states of a micro-batch, one row per position (`[targets, hidden]`),
/// with the adapter applied; differentiable (with dropout drawn from the seed) when
/// `dropout_seed` is given.
fn hidden_states(
    model: &Model,
    lora: &crate::model::lora::LoraSet,
    mb: &MicroBatch,
    dropout_seed: Option<u64>,
) -> candle_core::Result<Tensor> {
    let h = model.transformer.forward(
        &mb.ids,
        Forward {
            lora: Some(lora),
            layout: Layout::Packed {
                positions: mb.positions.clone(),
                segments: mb.segments.clone(),
            },
            differentiable: dropout_seed.is_some(),
            dropout_seed,
            ..Default::default()
        },
    )?;
    h.reshape((mb.targets.len(), model.config().hidden_size))
}

/// Sum of cross-entropy over a micro-batch's targets, differentiable w.r.t. the adapter.
pub fn micro_batch_loss(
    model: &Model,
    adapter: &TrainableAdapter,
    mb: &MicroBatch,
    dropout_seed: u64,
) -> candle_core::Result<Tensor> {
    let hidden = hidden_states(model, &adapter.lora_set(), mb, Some(dropout_seed))?;
    super::loss::cross_entropy_sum_differentiable(&model.transformer, &hidden, &mb.targets)
}

/// The loss of a group of micro-batches (one optimizer step's, averaged over its
/// `trained` target tokens) and the gradient of every adapter tensor, in `named`'s order;
/// `None` when no micro-batch has a target. `seed(j)` is micro-batch `j`'s dropout seed.
pub fn accumulated_gradients(
    model: &Model,
    adapter: &TrainableAdapter,
    named: &[(String, candle_core::Var)],
    group: &[MicroBatch],
    trained: usize,
    seed: impl Fn(usize) -> u64,
) -> candle_core::Result<(Option<Vec<Tensor>>, f64)> {
    let mut grads: Option<Vec<Tensor>> = None;
    let mut loss_sum = 0f64;
    for (j, mb) in group.iter().enumerate() {
        if mb.trained_tokens == 0 {
            continue;
        }
        let loss = (micro_batch_loss(model, adapter, mb, seed(j))? / trained as f64)?;
        loss_sum += loss.to_scalar::<f32>()? as f64;
        let store = loss.backward()?;
        let g: Vec<Tensor> = named
            .iter()
            .map(|(_, v)| match store.get(v.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => v.as_tensor().zeros_like(),
            })
            .collect::<candle_core::Result<_>>()?;
        grads = Some(match grads {
            None => g,
            Some(acc) => acc
                .iter()
                .zip(&g)
                .map(|(a, b)| a + b)
                .collect::<candle_core::Result<_>>()?,
        });
    }
    Ok((grads, loss_sum))
}

/// Mean loss over the eval examples with the adapter's current values (no gradients).
pub fn evaluate(
    model: &Model,
    adapter: &TrainableAdapter,
    prepared: &PreparedData,
    cfg: &RunConfig,
) -> anyhow::Result<Option<f64>> {
    if prepared.eval.is_empty() {
        return Ok(None);
    }
    let refs: Vec<&super::batch::Example> = prepared.eval.iter().collect();
    let rows = data::rows_for(&refs, cfg.data.packing, cfg.data.max_seq_len);
    let lora = adapter.lora_set();
    let (mut sum, mut n) = (0f64, 0usize);
    for chunk in rows.chunks(cfg.training.batch_size) {
        let mb = data::micro_batch(chunk, model.transformer.device())?;
        let losses = crate::sys::with_pool_awake(|| {
            let hidden = hidden_states(model, &lora, &mb, None)?;
            super::loss::token_losses(&model.transformer, &hidden, &mb.targets)
        })?;
        sum += losses.iter().map(|&x| x as f64).sum::<f64>();
        n += losses.len();
    }
    Ok((n > 0).then(|| sum / n as f64))
}

/// Evaluates, keeps the best eval loss, and logs and reports it.
fn eval_and_report(
    model: &Model,
    adapter: &TrainableAdapter,
    prepared: &PreparedData,
    cfg: &RunConfig,
    run: &RunDir,
    control: &mut dyn Control,
    state: &mut TrainerState,
) -> anyhow::Result<()> {
    if let Some(loss) = evaluate(model, adapter, prepared, cfg)? {
        state.best_eval_loss = Some(state.best_eval_loss.map_or(loss, |b| b.min(loss)));
        run.log_metric(&MetricLine::Eval {
            step: state.step,
            loss,
        })?;
        control.send(TrainEvent::Eval {
            step: state.step,
            loss,
        });
    }
    Ok(())
}

/// Runs (or resumes) a training run to its end, a stop, or a failure.
pub fn run(
    cfg: RunConfig,
    model: Arc<Model>,
    start: Start,
    control: &mut dyn Control,
) -> anyhow::Result<Summary> {
    crate::sys::on_own_pool(move || run_on_this_thread(cfg, model, start, control))
}

fn run_on_this_thread(
    cfg: RunConfig,
    model: Arc<Model>,
    start: Start,
    control: &mut dyn Control,
) -> anyhow::Result<Summary> {
    // Declared first, dropped last: the heap the steps grew goes back when the run ends.
    let _release = crate::sys::ReleaseFreeMemoryOnDrop;
    let problems = cfg.validate();
    if !problems.is_empty() {
        anyhow::bail!("the run config is not usable: {}", problems.join("; "));
    }
    let device = model.transformer.device().clone();
    let mut logs = Vec::new();
    let prepared = data::prepare(&cfg, &model, &mut |m| logs.push(m))?;
    for m in logs {
        control.send(TrainEvent::Log { message: m });
    }
    let first_epoch = epoch_batches(&prepared, &cfg, 0);
    let total = total_steps(&cfg, first_epoch.len());
    let mut adapter = TrainableAdapter::init(
        model.config(),
        &cfg.lora,
        model.hub_id.clone(),
        cfg.training.seed,
        &device,
    )?;
    let named = adapter.named_vars();
    let mut opt = AdamW::new(
        named.iter().map(|(_, v)| v.clone()).collect(),
        cfg.optim.clone(),
    )?;
    let (run, mut state) = match start {
        Start::Fresh => {
            let run = RunDir::create(&cfg, &prepared.dataset_sha256)?;
            let state = TrainerState {
                step: 0,
                total_steps: total,
                epoch: 0,
                micro_batch: 0,
                best_eval_loss: None,
                elapsed_s: 0.0,
            };
            (run, state)
        }
        Start::Resume { run, checkpoint } => {
            let ck = super::run_dir::load_checkpoint(&checkpoint, &device)?;
            adapter.load_values(&checkpoint, model.config(), &device)?;
            for (i, (name, _)) in named.iter().enumerate() {
                let m = ck.moments.get(&format!("m.{name}"));
                let v = ck.moments.get(&format!("v.{name}"));
                match (m, v) {
                    (Some(m), Some(v)) => {
                        opt.m[i] = m.clone();
                        opt.v[i] = v.clone();
                    }
                    _ => anyhow::bail!("{}: optimizer state lacks {name}", checkpoint.display()),
                }
            }
            opt.step = ck.state.step;
            run.truncate_metrics_after(ck.state.step)?;
            control.send(TrainEvent::Log {
                message: format!(
                    "resuming from step {} of {} ({})",
                    ck.state.step,
                    ck.state.total_steps,
                    checkpoint.display()
                ),
            });
            (run, ck.state)
        }
    };
    let trainable = adapter.parameter_count();
    super::estimate::calibrate();
    let estimate = super::estimate::estimate(model.config(), &cfg, trainable, total);
    control.send(TrainEvent::Started {
        run_dir: run.path.clone(),
        total_steps: state.total_steps,
        start_step: state.step,
        estimate: estimate.clone(),
    });

    let t_start = Instant::now();
    let elapsed_before = state.elapsed_s;
    let start_step = state.step;
    let mut last_loss = None;
    let mut stopped_early = false;
    let mut save_now = false;
    let accum = cfg.training.grad_accumulation;
    let save_checkpoint = |adapter: &TrainableAdapter,
                           opt: &AdamW,
                           state: &TrainerState|
     -> anyhow::Result<std::path::PathBuf> {
        let mut moments = Vec::new();
        for (i, (name, _)) in named.iter().enumerate() {
            moments.push((format!("m.{name}"), opt.m[i].clone()));
            moments.push((format!("v.{name}"), opt.v[i].clone()));
        }
        run.save_checkpoint(&adapter.config, &adapter.pairs(), &moments, state)
    };
    let mut epoch_cache: Option<(usize, Vec<Vec<super::batch::PackedRow>>)> =
        Some((0, first_epoch));

    'outer: while state.step < state.total_steps {
        let batches = match epoch_cache.take() {
            Some((e, b)) if e == state.epoch => b,
            _ => epoch_batches(&prepared, &cfg, state.epoch),
        };
        let n_micro = batches.len();
        while state.micro_batch < n_micro && state.step < state.total_steps {
            let t_step = Instant::now();
            let group: Vec<MicroBatch> = batches
                [state.micro_batch..(state.micro_batch + accum).min(n_micro)]
                .iter()
                .map(|rows| data::micro_batch(rows, &device))
                .collect::<candle_core::Result<_>>()?;
            let trained: usize = group.iter().map(|m| m.trained_tokens).sum();
            let tokens: usize = group.iter().map(|m| m.tokens).sum();
            let seed = |j: usize| cfg.training.seed ^ ((state.step as u64) << 20) ^ (j as u64);
            let (grads, loss_sum) = crate::sys::with_pool_awake(|| {
                accumulated_gradients(&model, &adapter, &named, &group, trained, seed)
            })?;
            let step_no = state.step + 1;
            if !loss_sum.is_finite() {
                let msg = format!("loss became {loss_sum} at step {step_no}; the run stops and keeps its last good checkpoint (try a lower learning rate)");
                control.send(TrainEvent::Failed { error: msg.clone() });
                anyhow::bail!(msg);
            }
            let Some(grads) = grads else {
                state.micro_batch += accum;
                continue;
            };
            let norm = optim::grad_norm(&grads)?;
            if !norm.is_finite() {
                let msg = format!("gradient norm became {norm} at step {step_no}; the run stops and keeps its last good checkpoint (try a lower learning rate or max_grad_norm)");
                control.send(TrainEvent::Failed { error: msg.clone() });
                anyhow::bail!(msg);
            }
            let grads = optim::clip(grads, norm, cfg.optim.max_grad_norm)?;
            let lr = optim::learning_rate(&cfg.optim, state.step, state.total_steps);
            opt.update(&grads, lr)?;
            state.step += 1;
            state.micro_batch += accum;
            last_loss = Some(loss_sum);
            let step_s = t_step.elapsed().as_secs_f64();
            let done_here = (state.step - start_step) as f64;
            let rate = t_start.elapsed().as_secs_f64() / done_here.max(1.0);
            let metrics = StepMetrics {
                step: state.step,
                epoch: state.epoch as f64
                    + state.micro_batch.min(n_micro) as f64 / n_micro.max(1) as f64,
                loss: loss_sum,
                lr,
                grad_norm: norm,
                tokens,
                tokens_per_s: tokens as f64 / step_s.max(1e-9),
                eta_s: rate * (state.total_steps - state.step) as f64,
            };
            if state.step % cfg.training.log_every.max(1) == 0 || state.step == state.total_steps {
                run.log_metric(&MetricLine::Step(metrics.clone()))?;
                control.send(TrainEvent::Step(metrics));
            }
            let mut stop = false;
            while let Some(cmd) = control.poll() {
                match cmd {
                    TrainCommand::Stop => stop = true,
                    TrainCommand::SaveNow => save_now = true,
                    TrainCommand::Pause => {
                        control.send(TrainEvent::Paused { step: state.step });
                        loop {
                            match control.wait() {
                                Some(TrainCommand::Resume) => break,
                                Some(TrainCommand::Stop) | None => {
                                    stop = true;
                                    break;
                                }
                                Some(TrainCommand::SaveNow) => save_now = true,
                                Some(TrainCommand::Pause) => {}
                            }
                        }
                        if !stop {
                            control.send(TrainEvent::Resumed { step: state.step });
                        }
                    }
                    TrainCommand::Resume => {}
                }
            }
            if state.micro_batch >= n_micro {
                state.epoch += 1;
                state.micro_batch = 0;
            }
            let step_now = state.step;
            let every = |n: usize| n > 0 && step_now % n == 0;
            if every(cfg.training.eval_every) && state.step < state.total_steps {
                eval_and_report(&model, &adapter, &prepared, &cfg, &run, control, &mut state)?;
            }
            state.elapsed_s = elapsed_before + t_start.elapsed().as_secs_f64();
            if stop
                || save_now
                || (every(cfg.training.save_every) && state.step < state.total_steps)
            {
                let path = save_checkpoint(&adapter, &opt, &state)?;
                control.send(TrainEvent::Checkpoint {
                    step: state.step,
                    path,
                });
                save_now = false;
            }
            if stop {
                stopped_early = true;
                break 'outer;
            }
            if state.micro_batch == 0 {
                continue 'outer;
            }
        }
        if state.micro_batch >= n_micro {
            state.epoch += 1;
            state.micro_batch = 0;
        }
    }

    let mut adapter_dir = None;
    if !stopped_early {
        eval_and_report(&model, &adapter, &prepared, &cfg, &run, control, &mut state)?;
        state.elapsed_s = elapsed_before + t_start.elapsed().as_secs_f64();
        let path = save_checkpoint(&adapter, &opt, &state)?;
        control.send(TrainEvent::Checkpoint {
            step: state.step,
            path,
        });
        adapter_dir = Some(run.save_adapter(&adapter.config, &adapter.pairs())?);
    }
    let summary = Summary {
        run_dir: run.path.clone(),
        steps: state.step,
        final_loss: last_loss,
        best_eval_loss: state.best_eval_loss,
        duration_s: elapsed_before + t_start.elapsed().as_secs_f64(),
        adapter_dir,
        stopped_early,
    };
    control.send(TrainEvent::Finished {
        summary: summary.clone(),
    });
    Ok(summary)
}

/// Mean of the last `n` values, for smoothing displays.
pub fn tail_mean(values: &[f64], n: usize) -> Option<f64> {
    let tail = &values[values.len().saturating_sub(n)..];
    (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64)
}
