//! The step loop: forward through the transformer with the adapter, chunked loss over the
//! trained tokens, backward (gradients for the adapter only), clipping, AdamW, schedule;
//! metrics, evaluation, checkpoints, pause/stop, and the NaN guard. Runs on the caller's
//! thread (the training job) and reports through [`Control`]; every failure comes back as
//! the `Err` of [`run`], and the run folder is marked failed with it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};

use super::adapter::TrainableAdapter;
use super::batch::PackedRow;
use super::config::RunConfig;
use super::data::{self, MicroBatch, PreparedData};
use super::events::{StepMetrics, SuiteScore, Summary, TrainCommand, TrainEvent};
use super::optim::{self, AdamW};
use super::plan::{self, RunPlan};
use super::run_dir::{MetricLine, RunDir, TrainerState};
use super::selection::{BestBy, FinalAdapter, FinalChoice};
use super::suite_eval::RunSuite;
use crate::model::{Forward, Layout, Model};

/// Where a run starts from.
pub enum Start {
    Fresh,
    /// Resume from `checkpoints/step-N/` of an existing run directory.
    Resume {
        run: RunDir,
        checkpoint: PathBuf,
    },
}

/// How the loop talks to its watcher. `Send`, since the loop runs on a pool thread of its
/// own ([`crate::ops::runtime::on_own_pool`]).
pub trait Control: Send {
    fn send(&mut self, event: TrainEvent);
    /// A command, if one is waiting (never blocks).
    fn poll(&mut self) -> Option<TrainCommand>;
    /// Blocks until the next command (while paused); `None` when the watcher is gone.
    fn wait(&mut self) -> Option<TrainCommand>;
}

/// Runs (or resumes) a training run to its end or a stop. Any failure (the config, the
/// dataset, the run folder, a checkpoint write, a NaN loss) is the `Err`, with its cause;
/// when the run folder exists by then, it is marked failed with the same message.
/// `plan` is the run's plan when the caller made it already (else it is made here).
pub fn run(
    cfg: RunConfig,
    model: Arc<Model>,
    start: Start,
    plan: Option<RunPlan>,
    control: &mut dyn Control,
) -> anyhow::Result<Summary> {
    crate::ops::runtime::on_own_pool(move || {
        // Declared first, dropped last: the heap the steps grew goes back when the run ends.
        let _release = crate::ops::runtime::ReleaseFreeMemoryOnDrop;
        // The base stays as stored: the training products dequantize it panel by panel
        // (ops::frozen_weight), so a quantized base costs its file size.
        let mut trainer = Trainer::new(cfg, model, start, plan, control)?;
        match trainer.train() {
            Ok(summary) => Ok(summary),
            Err(e) => {
                trainer.run.mark_failed(&format!("{e:#}"));
                Err(e)
            }
        }
    })
}

/// The final hidden states of a micro-batch, one row per position (`[targets, hidden]`),
/// with the adapter applied; differentiable (with dropout drawn from the seed) when
/// `dropout_seed` is given.
pub(crate) fn hidden_states(
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
            training_ops: dropout_seed.is_some(),
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
/// With `checkpointing`, each layer is recomputed in the backward instead of keeping its
/// activations ([`super::checkpoint`]); the result is the same.
pub fn accumulated_gradients(
    model: &Model,
    adapter: &TrainableAdapter,
    named: &[(String, Var)],
    group: &[MicroBatch],
    trained: usize,
    seed: impl Fn(usize) -> u64,
    checkpointing: bool,
) -> candle_core::Result<(Option<Vec<Tensor>>, f64)> {
    let mut grads: Option<Vec<Tensor>> = None;
    let mut loss_sum = 0f64;
    for (j, mb) in group.iter().enumerate() {
        if mb.trained_tokens == 0 {
            continue;
        }
        let (loss, g) = if checkpointing {
            super::checkpoint::micro_batch_gradients(model, adapter, named, mb, trained, seed(j))?
        } else {
            let loss = (micro_batch_loss(model, adapter, mb, seed(j))? / trained as f64)?;
            let store = loss.backward()?;
            let g: Vec<Tensor> = named
                .iter()
                .map(|(_, v)| match store.get(v.as_tensor()) {
                    Some(g) => Ok(g.clone()),
                    None => v.as_tensor().zeros_like(),
                })
                .collect::<candle_core::Result<_>>()?;
            (loss.to_scalar::<f32>()? as f64, g)
        };
        loss_sum += loss;
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
    for chunk in rows.chunks(cfg.training.batch_size.max(1)) {
        let mb = data::micro_batch(chunk, model.transformer.device())?;
        let losses = crate::ops::runtime::with_pool_awake(|| {
            let hidden = hidden_states(model, &lora, &mb, None)?;
            super::loss::token_losses(&model.transformer, &hidden, &mb.targets)
        })?;
        sum += losses.iter().map(|&x| x as f64).sum::<f64>();
        n += losses.len();
    }
    Ok((n > 0).then(|| sum / n as f64))
}

/// What the user asked for between two steps.
#[derive(Default)]
struct Requests {
    stop: bool,
    save_now: bool,
    /// The patience ran out: the run ends here as if it had reached its last step.
    early_stop: bool,
}

/// One run in progress: its data, adapter, optimizer, folder and position.
struct Trainer<'c> {
    cfg: RunConfig,
    model: Arc<Model>,
    control: &'c mut dyn Control,
    plan: RunPlan,
    device: Device,
    adapter: TrainableAdapter,
    /// The frozen adapter a DPO run measures against (`None`: the base, adapter off).
    reference: Option<crate::model::lora::LoraSet>,
    named: Vec<(String, Var)>,
    opt: AdamW,
    run: RunDir,
    state: TrainerState,
    /// When this session of the run started, and the training time before it.
    started: Instant,
    elapsed_before: f64,
    start_step: usize,
    last_loss: Option<f64>,
    requests: Requests,
    /// The eval suite run at each evaluation, when the config names one.
    suite: Option<RunSuite>,
    /// The steps of this session's latest evaluation and checkpoint (neither is repeated
    /// at one step).
    last_eval_step: Option<usize>,
    checkpointed_at: Option<usize>,
    /// Seconds of each optimizer step of this session, and the step time and efficiency
    /// the estimate assumed, so that the run teaches the estimate this CPU's speed.
    step_seconds: Vec<f64>,
    estimated: Option<(f64, f64)>,
}

impl<'c> Trainer<'c> {
    /// Plans the run's data, creates the adapter and optimizer, and opens the run folder
    /// (a new one, or the resumed run's with its checkpoint loaded).
    fn new(
        cfg: RunConfig,
        model: Arc<Model>,
        start: Start,
        plan: Option<RunPlan>,
        control: &'c mut dyn Control,
    ) -> anyhow::Result<Self> {
        let plan = match plan {
            Some(p) => p,
            None => plan::plan(&cfg, &model)?,
        };
        // The training products read the stored rows; the evaluations' decode steps then
        // read them too rather than build a second copy of the weights.
        model.transformer.keep_stored_layouts();
        // The run's chat template serves the evaluations, the suite and the adapters'
        // tokenizer_config.json as it served the plan's tokenizing.
        let model = match super::template::run_model(&cfg, &model)? {
            Some(t) => Arc::new(t.model),
            None => model,
        };
        for note in &plan.notes {
            control.send(TrainEvent::Log {
                message: note.clone(),
            });
        }
        // A suite that cannot be read stops the run before its folder exists.
        let suite = RunSuite::load(&cfg.eval)?;
        let device = model.transformer.device().clone();
        let mut adapter = TrainableAdapter::init(
            model.config(),
            &cfg.lora,
            model.hub_id.clone(),
            cfg.training.seed,
            &device,
        )?;
        let reference = super::preference::apply_init_adapter(&cfg, &model, &mut adapter)?;
        let named = adapter.named_vars();
        let opt = AdamW::new(
            named.iter().map(|(_, v)| v.clone()).collect(),
            cfg.optim.clone(),
        )?;
        let (run, state) = match &start {
            Start::Fresh => (
                RunDir::create(&cfg, &plan.prepared.dataset_sha256)?,
                TrainerState::new(plan.total_steps),
            ),
            Start::Resume { run, .. } => {
                let run = RunDir::at(&run.path);
                // What a killed run left half-written goes before anything is read or written.
                let removed = run.remove_leftovers()?;
                if !removed.is_empty() {
                    control.send(TrainEvent::Log {
                        message: format!(
                            "removed what an interrupted write left: {}",
                            removed.join(", ")
                        ),
                    });
                }
                (run, TrainerState::new(0))
            }
        };
        let mut run = run;
        run.set_template_model(model.clone());
        let mut trainer = Trainer {
            start_step: state.step,
            elapsed_before: state.elapsed_s,
            cfg,
            model,
            control,
            plan,
            device,
            adapter,
            reference,
            named,
            opt,
            run,
            state,
            started: Instant::now(),
            last_loss: None,
            requests: Requests::default(),
            suite,
            last_eval_step: None,
            checkpointed_at: None,
            step_seconds: Vec::new(),
            estimated: None,
        };
        if let Start::Resume { checkpoint, .. } = start {
            trainer.restore(&checkpoint)?;
        }
        Ok(trainer)
    }

    /// Loads a checkpoint's adapter, optimizer moments and position.
    fn restore(&mut self, checkpoint: &std::path::Path) -> anyhow::Result<()> {
        let ck = super::run_dir::load_checkpoint(checkpoint, &self.device)?;
        self.adapter
            .load_values(checkpoint, self.model.config(), &self.device)?;
        for (i, (name, _)) in self.named.iter().enumerate() {
            let m = ck.moments.get(&format!("m.{name}"));
            let v = ck.moments.get(&format!("v.{name}"));
            match (m, v) {
                (Some(m), Some(v)) => {
                    self.opt.m[i] = m.clone();
                    self.opt.v[i] = v.clone();
                }
                _ => anyhow::bail!("{}: optimizer state lacks {name}", checkpoint.display()),
            }
        }
        self.opt.step = ck.state.step;
        self.run.truncate_metrics_after(ck.state.step)?;
        self.run.clear_failed()?;
        self.control.send(TrainEvent::Log {
            message: format!(
                "resuming from step {} of {} ({})",
                ck.state.step,
                ck.state.total_steps,
                checkpoint.display()
            ),
        });
        self.start_step = ck.state.step;
        self.elapsed_before = ck.state.elapsed_s;
        self.state = ck.state;
        Ok(())
    }

    /// Trains to the planned end or a stop, then writes the final adapter.
    fn train(&mut self) -> anyhow::Result<Summary> {
        super::estimate::calibrate();
        let estimate = self.plan.estimate(&self.model);
        let checkpointing = self.cfg.training.gradient_checkpointing;
        self.estimated = Some((
            estimate.seconds_per_step,
            super::estimate::step_efficiency(checkpointing),
        ));
        self.control.send(TrainEvent::Started {
            run_dir: self.run.path.clone(),
            total_steps: self.state.total_steps,
            start_step: self.state.step,
            estimate,
        });
        self.started = Instant::now();
        let mut epoch_cache = Some((0, std::mem::take(&mut self.plan.first_epoch)));
        while self.state.step < self.state.total_steps
            && !self.requests.stop
            && !self.requests.early_stop
        {
            let batches = match epoch_cache.take() {
                Some((e, b)) if e == self.state.epoch => b,
                _ => plan::epoch_batches(&self.plan.prepared, &self.cfg, self.state.epoch),
            };
            self.train_epoch(&batches)?;
        }
        let stopped_early = self.requests.stop;
        self.learn_step_time();
        let (adapter_dir, final_choice) = if stopped_early {
            (None, None)
        } else {
            if self.last_eval_step != Some(self.state.step) {
                self.eval()?;
            }
            self.checkpoint()?;
            let (dir, choice) = self.final_adapter()?;
            (Some(dir), Some(choice))
        };
        Ok(Summary {
            run_dir: self.run.path.clone(),
            steps: self.state.step,
            final_loss: self.last_loss,
            best_eval_loss: self.state.best_eval_loss,
            duration_s: self.elapsed_s(),
            adapter_dir,
            stopped_early,
            final_choice,
        })
    }

    /// Writes `adapter/`: the best checkpoint's adapter when the run keeps its best and one
    /// was measured, else the last step's; and `final.json`, which says which.
    fn final_adapter(&mut self) -> anyhow::Result<(PathBuf, FinalChoice)> {
        let last = self.state.step;
        let best = self.state.selection.best;
        let mut adapter_step = last;
        let from_best = match (self.cfg.eval.final_adapter, best) {
            (FinalAdapter::Best, Some(b)) if b.step != last => {
                match self.run.adapter_from_checkpoint(b.step) {
                    Ok(dir) => {
                        adapter_step = b.step;
                        Some(dir)
                    }
                    Err(e) => {
                        self.control.send(TrainEvent::Log {
                            message: format!(
                                "the best checkpoint (step {}) cannot be copied ({e:#}); the adapter is the last step's",
                                b.step
                            ),
                        });
                        None
                    }
                }
            }
            _ => None,
        };
        let dir = match from_best {
            Some(dir) => dir,
            None => self
                .run
                .save_adapter(&self.adapter.config, &self.adapter.pairs())?,
        };
        let choice = FinalChoice {
            wanted: self.cfg.eval.final_adapter,
            adapter_step,
            last_step: last,
            best_by: self.cfg.eval.best_by,
            best,
            early_stopped: self.requests.early_stop,
        };
        self.run.write_final(&choice)?;
        self.control.send(TrainEvent::Log {
            message: choice.describe(),
        });
        Ok((dir, choice))
    }

    /// Tells the estimate how long this run's steps took (the median after the first,
    /// which also times the kernels), once a few have run.
    fn learn_step_time(&self) {
        let Some((estimated_s, assumed)) = self.estimated else {
            return;
        };
        let mut steps: Vec<f64> = self.step_seconds.iter().skip(1).copied().collect();
        if steps.len() < 3 {
            return;
        }
        steps.sort_by(f64::total_cmp);
        let median = steps[steps.len() / 2];
        super::estimate::learn_step_time(
            assumed,
            estimated_s,
            median,
            self.cfg.training.gradient_checkpointing,
        );
    }

    /// The rest of the current epoch, from `state.micro_batch`, until its end, the run's
    /// planned end or a stop.
    fn train_epoch(&mut self, batches: &[Vec<PackedRow>]) -> anyhow::Result<()> {
        let n_micro = batches.len();
        while self.state.micro_batch < n_micro && self.state.step < self.state.total_steps {
            let end = (self.state.micro_batch + self.cfg.training.grad_accumulation).min(n_micro);
            let stepped = self.step(&batches[self.state.micro_batch..end], n_micro)?;
            self.state.micro_batch = end;
            if !stepped {
                continue;
            }
            self.take_commands();
            // A checkpoint written at the end of an epoch points at the next one.
            let epoch_done = self.state.micro_batch >= n_micro;
            if epoch_done {
                self.next_epoch();
            }
            self.after_step()?;
            if self.requests.stop || self.requests.early_stop || epoch_done {
                return Ok(());
            }
        }
        if self.state.micro_batch >= n_micro {
            self.next_epoch();
        }
        Ok(())
    }

    fn next_epoch(&mut self) {
        self.state.epoch += 1;
        self.state.micro_batch = 0;
    }

    /// One optimizer step over `rows` (its micro-batches). False when no micro-batch had a
    /// token to train on, so no step was taken.
    fn step(&mut self, rows: &[Vec<PackedRow>], n_micro: usize) -> anyhow::Result<bool> {
        let t_step = Instant::now();
        let group: Vec<MicroBatch> = rows
            .iter()
            .map(|r| data::micro_batch(r, &self.device))
            .collect::<candle_core::Result<_>>()?;
        let trained: usize = group.iter().map(|m| m.trained_tokens).sum();
        let tokens: usize = group.iter().map(|m| m.tokens).sum();
        let (seed, step_no) = (self.cfg.training.seed, self.state.step + 1);
        let seed = |j: usize| seed ^ ((self.state.step as u64) << 20) ^ (j as u64);
        let (grads, loss_sum, preference) = if self.cfg.stage.is_preference() {
            let s = crate::ops::runtime::with_pool_awake(|| {
                super::preference::accumulated_gradients(
                    &self.model,
                    &self.adapter,
                    &self.named,
                    &group,
                    &self.cfg,
                    self.reference.as_ref(),
                    seed,
                )
            })?;
            (s.grads, s.loss, s.metrics)
        } else {
            let (grads, loss_sum) = crate::ops::runtime::with_pool_awake(|| {
                accumulated_gradients(
                    &self.model,
                    &self.adapter,
                    &self.named,
                    &group,
                    trained,
                    seed,
                    self.cfg.training.gradient_checkpointing,
                )
            })?;
            (grads, loss_sum, None)
        };
        if !loss_sum.is_finite() {
            anyhow::bail!("loss became {loss_sum} at step {step_no}; the run stops and keeps its last good checkpoint (try a lower learning rate)");
        }
        let Some(grads) = grads else {
            return Ok(false);
        };
        let norm = optim::grad_norm(&grads)?;
        if !norm.is_finite() {
            anyhow::bail!("gradient norm became {norm} at step {step_no}; the run stops and keeps its last good checkpoint (try a lower learning rate or max_grad_norm)");
        }
        let grads = optim::clip(grads, norm, self.cfg.optim.max_grad_norm)?;
        let lr = optim::learning_rate(&self.cfg.optim, self.state.step, self.state.total_steps);
        self.opt.update(&grads, lr)?;
        self.state.step += 1;
        self.last_loss = Some(loss_sum);
        let step_s = t_step.elapsed().as_secs_f64();
        self.step_seconds.push(step_s);
        let done_here = (self.state.step - self.start_step) as f64;
        let rate = self.started.elapsed().as_secs_f64() / done_here.max(1.0);
        let micro_after = (self.state.micro_batch + rows.len()).min(n_micro);
        let metrics = StepMetrics {
            step: self.state.step,
            epoch: self.state.epoch as f64 + micro_after as f64 / n_micro.max(1) as f64,
            loss: loss_sum,
            lr,
            grad_norm: norm,
            tokens,
            tokens_per_s: tokens as f64 / step_s.max(1e-9),
            eta_s: rate * (self.state.total_steps - self.state.step) as f64,
            preference,
        };
        let last = self.state.step == self.state.total_steps;
        if self
            .state
            .step
            .is_multiple_of(self.cfg.training.log_every.max(1))
            || last
        {
            self.run.log_metric(&MetricLine::Step(metrics.clone()))?;
            self.control.send(TrainEvent::Step(metrics));
        }
        Ok(true)
    }

    /// Takes the commands that arrived during the step; a pause waits here.
    fn take_commands(&mut self) {
        while let Some(cmd) = self.control.poll() {
            match cmd {
                TrainCommand::Stop => self.requests.stop = true,
                TrainCommand::SaveNow => self.requests.save_now = true,
                TrainCommand::Pause => self.pause(),
                TrainCommand::Resume => {}
            }
        }
    }

    /// Waits for Resume (or Stop, or the watcher going away).
    fn pause(&mut self) {
        self.control.send(TrainEvent::Paused {
            step: self.state.step,
        });
        loop {
            match self.control.wait() {
                Some(TrainCommand::Resume) => break,
                Some(TrainCommand::Stop) | None => {
                    self.requests.stop = true;
                    return;
                }
                Some(TrainCommand::SaveNow) => self.requests.save_now = true,
                Some(TrainCommand::Pause) => {}
            }
        }
        self.control.send(TrainEvent::Resumed {
            step: self.state.step,
        });
    }

    /// The evaluation and checkpoint due after a step (and the one a stop or "save now"
    /// asks for). The final step's are written by [`Trainer::train`].
    fn after_step(&mut self) -> anyhow::Result<()> {
        let step = self.state.step;
        let before_end = step < self.state.total_steps;
        let every = |n: usize| n > 0 && step.is_multiple_of(n);
        if every(self.cfg.training.eval_every) && before_end {
            self.eval()?;
        }
        let due = every(self.cfg.training.save_every) && before_end;
        if self.requests.stop || self.requests.save_now || due {
            self.checkpoint()?;
            self.requests.save_now = false;
        }
        Ok(())
    }

    /// Evaluates: the eval loss and, when the run has one, the eval suite; logs and reports
    /// them, keeps the checkpoint of a new best by the run's measure, and ends the run when
    /// the patience has run out.
    fn eval(&mut self) -> anyhow::Result<()> {
        let step = self.state.step;
        self.last_eval_step = Some(step);
        let loss = if self.cfg.stage.is_preference() {
            self.preference_eval()?
        } else {
            evaluate(&self.model, &self.adapter, &self.plan.prepared, &self.cfg)?
        };
        if let Some(loss) = loss {
            self.state.best_eval_loss =
                Some(self.state.best_eval_loss.map_or(loss, |b| b.min(loss)));
            self.run.log_metric(&MetricLine::Eval { step, loss })?;
            self.control.send(TrainEvent::Eval { step, loss });
        }
        let score = self.run_suite()?;
        let by = self.cfg.eval.best_by;
        let value = match by {
            BestBy::EvalLoss => loss,
            BestBy::PassRate => score.as_ref().map(SuiteScore::pass_rate),
        };
        let Some(value) = value else {
            return Ok(());
        };
        let (min_delta, patience) = (self.cfg.eval.min_delta, self.cfg.eval.patience);
        let verdict = self
            .state
            .selection
            .observe(by, min_delta, patience, step, value);
        if verdict.improved {
            self.run.log_metric(&MetricLine::Best { step, by, value })?;
            self.control.send(TrainEvent::Best { step, by, value });
            self.checkpoint()?;
        }
        if verdict.stop && !self.requests.early_stop {
            self.requests.early_stop = true;
            let best = self.state.selection.best.map_or(String::new(), |b| {
                format!(" (best {} at step {})", by.format(b.value), b.step)
            });
            self.control.send(TrainEvent::Log {
                message: format!(
                    "step {step}: stopping early: no better {} in {patience} evaluations{best}",
                    by.label()
                ),
            });
        }
        Ok(())
    }

    /// Runs the eval suite on the adapter as it is, when the run has one. A stop asked for
    /// meanwhile cancels it (no score); a pause waits until it has finished.
    fn run_suite(&mut self) -> anyhow::Result<Option<SuiteScore>> {
        let Some(suite) = &self.suite else {
            return Ok(None);
        };
        let step = self.state.step;
        self.control.send(TrainEvent::Log {
            message: format!(
                "step {step}: running the eval suite {} ({} prompts)",
                suite.name(),
                suite.prompts()
            ),
        });
        let cancel = AtomicBool::new(false);
        let lora = self.adapter.lora_set();
        let (control, requests) = (&mut *self.control, &mut self.requests);
        let mut pause = false;
        let score = suite.run(&self.model, &lora, step, &cancel, &mut |_, _| {
            while let Some(cmd) = control.poll() {
                match cmd {
                    TrainCommand::Stop => {
                        requests.stop = true;
                        cancel.store(true, Ordering::Relaxed);
                    }
                    TrainCommand::SaveNow => requests.save_now = true,
                    TrainCommand::Pause => pause = true,
                    TrainCommand::Resume => pause = false,
                }
            }
        })?;
        if pause && !self.requests.stop {
            self.pause();
        }
        let Some(score) = score else {
            return Ok(None);
        };
        self.run.log_metric(&MetricLine::Suite(score.clone()))?;
        self.control.send(TrainEvent::Suite(score.clone()));
        Ok(Some(score))
    }

    /// A preference run's loss on its held-out pairs; their reward figures are logged and
    /// sent.
    fn preference_eval(&mut self) -> anyhow::Result<Option<f64>> {
        let Some((loss, metrics)) = super::preference::evaluate(
            &self.model,
            &self.adapter,
            self.reference.as_ref(),
            &self.plan.prepared,
            &self.cfg,
        )?
        else {
            return Ok(None);
        };
        let step = self.state.step;
        self.run
            .log_metric(&MetricLine::PreferenceEval { step, metrics })?;
        self.control
            .send(TrainEvent::PreferenceEval { step, metrics });
        Ok(Some(loss))
    }

    /// Writes `checkpoints/step-N/`: the adapter, the optimizer moments and the position.
    fn checkpoint(&mut self) -> anyhow::Result<()> {
        if self.checkpointed_at == Some(self.state.step) {
            return Ok(());
        }
        self.state.elapsed_s = self.elapsed_s();
        let mut moments = Vec::new();
        for (i, (name, _)) in self.named.iter().enumerate() {
            moments.push((format!("m.{name}"), self.opt.m[i].clone()));
            moments.push((format!("v.{name}"), self.opt.v[i].clone()));
        }
        let path = self.run.save_checkpoint(
            &self.adapter.config,
            &self.adapter.pairs(),
            &moments,
            &self.state,
        )?;
        self.checkpointed_at = Some(self.state.step);
        self.control.send(TrainEvent::Checkpoint {
            step: self.state.step,
            path,
        });
        Ok(())
    }

    /// Training time of the whole run, resumed sessions included.
    fn elapsed_s(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }
}

/// Mean of the last `n` values, for smoothing displays.
pub fn tail_mean(values: &[f64], n: usize) -> Option<f64> {
    let tail = &values[values.len().saturating_sub(n)..];
    (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64)
}
