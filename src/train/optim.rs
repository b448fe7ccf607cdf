//! The optimizer side of a step: AdamW with decoupled weight decay (as `torch.optim.AdamW`),
//! global gradient-norm clipping, and the learning-rate schedule (warmup, then constant,
//! linear or cosine decay, as transformers' schedulers compute it).

use candle_core::{Result, Tensor, Var};

use super::config::{OptimSection, Schedule};

/// Per-parameter AdamW state.
pub struct AdamW {
    pub params: Vec<Var>,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Optimizer steps taken.
    pub step: usize,
    cfg: OptimSection,
}

impl AdamW {
    pub fn new(params: Vec<Var>, cfg: OptimSection) -> Result<Self> {
        let m = params
            .iter()
            .map(|p| p.as_tensor().zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self {
            params,
            m,
            v,
            step: 0,
            cfg,
        })
    }

    /// Applies one update with learning rate `lr` and gradients `grads` (same order as params).
    pub fn update(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        for (i, p) in self.params.iter().enumerate() {
            let g = &grads[i];
            let m = ((&self.m[i] * b1)? + (g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((&v / bc2)?.sqrt()? + self.cfg.eps)?;
            let upd = ((&m / bc1)? / denom)?;
            let mut w = p.as_tensor().clone();
            if self.cfg.weight_decay > 0.0 {
                w = (&w * (1.0 - lr * self.cfg.weight_decay))?;
            }
            p.set(&(w - (upd * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

/// Global L2 norm of the gradients.
pub fn grad_norm(grads: &[Tensor]) -> Result<f64> {
    let mut sum = 0f64;
    for g in grads {
        sum += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(sum.sqrt())
}

/// Scales gradients so their global norm is at most `max_norm` (as `clip_grad_norm_`).
pub fn clip(grads: Vec<Tensor>, norm: f64, max_norm: f64) -> Result<Vec<Tensor>> {
    if max_norm <= 0.0 || norm <= max_norm {
        return Ok(grads);
    }
    let coef = max_norm / (norm + 1e-6);
    grads.into_iter().map(|g| g * coef).collect()
}

/// Warmup steps for a run of `total` optimizer steps.
pub fn warmup_steps(cfg: &OptimSection, total: usize) -> usize {
    cfg.warmup_steps
        .unwrap_or_else(|| (cfg.warmup_ratio * total as f64).ceil() as usize)
}

/// The learning rate for optimizer step `step` (0-based), like transformers'
/// `get_{constant,linear,cosine}_schedule_with_warmup`.
pub fn learning_rate(cfg: &OptimSection, step: usize, total: usize) -> f64 {
    let warmup = warmup_steps(cfg, total);
    let base = cfg.learning_rate;
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let decay_steps = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / decay_steps).min(1.0);
    match cfg.schedule {
        Schedule::Constant => base,
        Schedule::Linear => base * (1.0 - progress).max(0.0),
        Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_shapes() {
        let cfg = OptimSection {
            learning_rate: 1.0,
            warmup_steps: Some(2),
            schedule: Schedule::Cosine,
            ..Default::default()
        };
        assert_eq!(learning_rate(&cfg, 0, 10), 0.0);
        assert_eq!(learning_rate(&cfg, 1, 10), 0.5);
        assert_eq!(learning_rate(&cfg, 2, 10), 1.0);
        assert!((learning_rate(&cfg, 6, 10) - 0.5).abs() < 1e-12);
        let lin = OptimSection {
            schedule: Schedule::Linear,
            ..cfg.clone()
        };
        assert!((learning_rate(&lin, 6, 10) - 0.5).abs() < 1e-12);
    }

    // torch.optim.AdamW's update rule (decoupled decay, bias-corrected moments), worked by
    // hand for lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, p = [1.0, -2.0] and
    // a constant grad [0.5, 0.25]: each step is p <- p·(1 - 0.001) - 0.1, so after two steps
    // p = [0.798101, -2.195902].
    #[test]
    fn adamw_matches_torch() {
        let dev = Device::Cpu;
        let p = Var::new(&[1.0f32, -2.0], &dev).unwrap();
        let cfg = OptimSection {
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut opt = AdamW::new(vec![p.clone()], cfg).unwrap();
        let g = Tensor::new(&[0.5f32, 0.25], &dev).unwrap();
        opt.update(std::slice::from_ref(&g), 0.1).unwrap();
        opt.update(&[g], 0.1).unwrap();
        let v = p.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (v[0] - 0.798101).abs() < 1e-5 && (v[1] + 2.195902).abs() < 1e-5,
            "{v:?}"
        );
    }
}
