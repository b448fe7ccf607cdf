//! The live training plots: train loss (raw and smoothed, with the eval loss), the eval
//! suite's pass rate beside it when the run has a suite, learning rate, gradient norm and
//! tokens per second, drawn from a list of [`StepMetrics`]; the best evaluation is ringed.
//! Independent of the engine, so it is tested and reused (the Runs tab overlays curves).

use eframe::egui;
use egui_plot::{Legend, Line, Plot, PlotPoints, Points};

use crate::train::{BestBy, StepMetrics};

/// What a run has logged so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    pub steps: Vec<StepMetrics>,
    /// (step, eval loss).
    pub evals: Vec<(usize, f64)>,
    /// (step, share of the eval suite's checks passed).
    pub suites: Vec<(usize, f64)>,
    /// The latest best evaluation: (step, measure, value).
    pub best: Option<(usize, BestBy, f64)>,
    /// (step, figures on the held-out pairs) of a preference run.
    pub preference_evals: Vec<(usize, crate::train::PreferenceMetrics)>,
}

impl Curves {
    pub fn push(&mut self, m: StepMetrics) {
        // A resumed run may repeat steps it logged before; keep the newest.
        while self.steps.last().is_some_and(|l| l.step >= m.step) {
            self.steps.pop();
        }
        self.steps.push(m);
    }

    pub fn last(&self) -> Option<&StepMetrics> {
        self.steps.last()
    }

    /// The lowest eval loss.
    pub fn best_eval(&self) -> Option<f64> {
        self.evals
            .iter()
            .map(|(_, l)| *l)
            .filter(|l| l.is_finite())
            .min_by(f64::total_cmp)
    }
}

/// Exponential moving average with TensorBoard's debiasing: `alpha` 0 leaves the values
/// as they are, 0.99 smooths hard. Non-finite values are passed through and skipped.
pub fn smooth(values: &[f64], alpha: f64) -> Vec<f64> {
    let alpha = alpha.clamp(0.0, 0.999);
    let mut acc = 0.0;
    let mut weight = 0.0;
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                return v;
            }
            acc = acc * alpha + (1.0 - alpha) * v;
            weight = weight * alpha + (1.0 - alpha);
            if weight > 0.0 {
                acc / weight
            } else {
                v
            }
        })
        .collect()
}

pub(super) fn series(c: &Curves, f: impl Fn(&StepMetrics) -> f64) -> Vec<[f64; 2]> {
    c.steps
        .iter()
        .map(|m| [m.step as f64, f(m)])
        .filter(|p| p[1].is_finite())
        .collect()
}

const EVAL_COLOR: egui::Color32 = egui::Color32::from_rgb(230, 140, 40);
const SUITE_COLOR: egui::Color32 = egui::Color32::from_rgb(60, 170, 110);

/// A ring around the best evaluation, when it is measured by `by`.
fn best_ring(p: &mut egui_plot::PlotUi<'_>, c: &Curves, by: BestBy, color: egui::Color32) {
    if let Some((step, b, value)) = c.best {
        if b == by && value.is_finite() {
            let shown = if by == BestBy::PassRate {
                value * 100.0
            } else {
                value
            };
            p.points(
                Points::new("best", PlotPoints::from(vec![[step as f64, shown]]))
                    .radius(7.0)
                    .filled(false)
                    .color(color),
            );
        }
    }
}

/// The eval suite's pass rate (percent of checks passed) at each evaluation.
pub fn pass_rate_plot_ui(ui: &mut egui::Ui, c: &Curves, height: f32, id: &str) {
    let pts: Vec<[f64; 2]> = c
        .suites
        .iter()
        .map(|(s, r)| [*s as f64, r * 100.0])
        .collect();
    Plot::new(id)
        .height(height)
        .legend(Legend::default())
        .x_axis_label("step")
        .include_y(0.0)
        .include_y(100.0)
        .allow_scroll(false)
        .show(ui, |p| {
            p.points(
                Points::new("pass rate %", PlotPoints::from(pts.clone()))
                    .radius(3.5)
                    .color(SUITE_COLOR),
            );
            p.line(Line::new("pass rate %", PlotPoints::from(pts)).color(SUITE_COLOR));
            best_ring(p, c, BestBy::PassRate, SUITE_COLOR);
        });
}

/// The loss plot: raw loss faint, smoothed loss strong, eval loss as points.
pub fn loss_plot_ui(ui: &mut egui::Ui, c: &Curves, smoothing: f32, height: f32, id: &str) {
    let raw = series(c, |m| m.loss);
    let ys: Vec<f64> = raw.iter().map(|p| p[1]).collect();
    let smoothed: Vec<[f64; 2]> = raw
        .iter()
        .zip(smooth(&ys, smoothing as f64))
        .map(|(p, s)| [p[0], s])
        .collect();
    let evals: Vec<[f64; 2]> = c.evals.iter().map(|(s, l)| [*s as f64, *l]).collect();
    let accent = ui.visuals().selection.bg_fill;
    Plot::new(id)
        .height(height)
        .legend(Legend::default())
        .x_axis_label("step")
        .allow_scroll(false)
        .show(ui, |p| {
            p.line(Line::new("loss", PlotPoints::from(raw)).color(accent.gamma_multiply(0.35)));
            p.line(
                Line::new("loss (smoothed)", PlotPoints::from(smoothed))
                    .color(accent)
                    .width(2.0),
            );
            if !evals.is_empty() {
                p.points(
                    Points::new("eval loss", PlotPoints::from(evals.clone()))
                        .radius(3.5)
                        .color(EVAL_COLOR),
                );
                p.line(Line::new("eval loss", PlotPoints::from(evals)).color(EVAL_COLOR));
            }
            best_ring(p, c, BestBy::EvalLoss, EVAL_COLOR);
        });
}

pub(super) fn small_plot_ui(
    ui: &mut egui::Ui,
    id: &str,
    name: &str,
    pts: Vec<[f64; 2]>,
    height: f32,
) {
    Plot::new(id)
        .height(height)
        .legend(Legend::default())
        .allow_scroll(false)
        .show(ui, |p| p.line(Line::new(name, PlotPoints::from(pts))));
}

/// All four plots, with the smoothing slider.
pub fn curves_ui(ui: &mut egui::Ui, c: &Curves, smoothing: &mut f32) {
    ui.horizontal(|ui| {
        ui.label("Smoothing");
        ui.add(egui::Slider::new(smoothing, 0.0..=0.99))
            .on_hover_text("Exponential moving average of the loss; 0 shows the raw curve");
        if let Some(m) = c.last() {
            ui.separator();
            ui.label(format!(
                "step {} · loss {:.4} · lr {:.2e} · grad norm {:.3} · {:.0} tokens/s",
                m.step, m.loss, m.lr, m.grad_norm, m.tokens_per_s
            ));
        }
        if let Some(b) = c.best_eval() {
            ui.separator();
            ui.label(format!("best eval loss {b:.4}"));
        }
        if let Some((_, r)) = c.suites.last() {
            ui.separator();
            ui.label(format!("pass rate {:.1} %", r * 100.0));
        }
        if let Some((step, by, value)) = c.best {
            ui.separator();
            ui.label(format!("best checkpoint: step {step} ({} {})", by.label(), by.format(value)))
                .on_hover_text("The run keeps this checkpoint; with the final adapter set to best, it becomes the run's adapter");
        }
    });
    let h = ui.available_height();
    let big = (h * 0.55).max(140.0);
    let small = ((h - big) - 30.0).max(90.0);
    if c.suites.is_empty() {
        loss_plot_ui(ui, c, *smoothing, big, "train-loss");
    } else {
        ui.columns(2, |cols| {
            loss_plot_ui(&mut cols[0], c, *smoothing, big, "train-loss");
            pass_rate_plot_ui(&mut cols[1], c, big, "train-pass-rate");
        });
    }
    ui.columns(3, |cols| {
        small_plot_ui(
            &mut cols[0],
            "train-lr",
            "learning rate",
            series(c, |m| m.lr),
            small,
        );
        small_plot_ui(
            &mut cols[1],
            "train-grad-norm",
            "grad norm",
            series(c, |m| m.grad_norm),
            small,
        );
        small_plot_ui(
            &mut cols[2],
            "train-tokens-per-s",
            "tokens/s",
            series(c, |m| m.tokens_per_s),
            small,
        );
    });
    super::preference_plots::plots_ui(ui, c, small);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(step: usize, loss: f64) -> StepMetrics {
        StepMetrics {
            step,
            epoch: 0.0,
            loss,
            lr: 1e-4,
            grad_norm: 1.0,
            tokens: 0,
            tokens_per_s: 100.0,
            eta_s: 0.0,
            preference: None,
        }
    }

    #[test]
    fn smoothing_zero_is_identity_and_debiased_from_the_start() {
        let v = [4.0, 2.0, 3.0];
        assert_eq!(smooth(&v, 0.0), v.to_vec());
        let s = smooth(&v, 0.9);
        assert!(
            (s[0] - 4.0).abs() < 1e-12,
            "the first value is not pulled to 0"
        );
        assert!(s[1] < 4.0 && s[1] > 2.0);
    }

    #[test]
    fn smoothing_skips_nan() {
        let s = smooth(&[1.0, f64::NAN, 1.0], 0.5);
        assert!(s[1].is_nan());
        assert!((s[2] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn resumed_steps_replace_later_ones() {
        let mut c = Curves::default();
        for s in 1..=5 {
            c.push(m(s, 1.0));
        }
        c.push(m(3, 0.5));
        assert_eq!(c.steps.len(), 3);
        assert_eq!(c.last().map(|l| l.loss), Some(0.5));
    }
}
