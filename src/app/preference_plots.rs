//! The Train tab's plots of a preference run (DPO, ORPO): reward margin, reward accuracy
//! (per step, and on the held-out pairs as points), and the chosen and rejected replies'
//! log-probabilities, drawn from the steps' [`crate::train::PreferenceMetrics`]. Nothing
//! is drawn for an SFT run.

use eframe::egui;
use egui_plot::{Legend, Line, Plot, PlotPoints, Points};

use super::live_plots::{series, small_plot_ui, Curves};

/// Whether any logged step carries preference figures.
pub fn has_preference(c: &Curves) -> bool {
    c.steps.iter().any(|m| m.preference.is_some())
}

/// The three preference plots in a row, under the loss plots; nothing for an SFT run.
pub fn plots_ui(ui: &mut egui::Ui, c: &Curves, height: f32) {
    if !has_preference(c) {
        return;
    }
    let pick = |f: fn(&crate::train::PreferenceMetrics) -> f64| {
        series(c, move |m| m.preference.as_ref().map_or(f64::NAN, f))
    };
    if let Some(p) = c.last().and_then(|m| m.preference) {
        ui.label(format!(
            "reward margin {:.4} · reward accuracy {:.2} · log-prob chosen {:.3} · rejected {:.3}",
            p.reward_margin, p.reward_accuracy, p.chosen_logp, p.rejected_logp
        ));
    }
    let held_out: Vec<[f64; 2]> = c
        .preference_evals
        .iter()
        .map(|(s, m)| [*s as f64, m.reward_accuracy])
        .collect();
    ui.columns(3, |cols| {
        small_plot_ui(
            &mut cols[0],
            "train-reward-margin",
            "reward margin",
            pick(|p| p.reward_margin),
            height,
        );
        Plot::new("train-reward-accuracy")
            .height(height)
            .legend(Legend::default())
            .allow_scroll(false)
            .include_y(0.0)
            .include_y(1.0)
            .show(&mut cols[1], |p| {
                p.line(Line::new(
                    "reward accuracy",
                    PlotPoints::from(pick(|p| p.reward_accuracy)),
                ));
                if !held_out.is_empty() {
                    p.points(
                        Points::new("held-out accuracy", PlotPoints::from(held_out.clone()))
                            .radius(3.5)
                            .color(egui::Color32::from_rgb(230, 140, 40)),
                    );
                }
            });
        Plot::new("train-logps")
            .height(height)
            .legend(Legend::default())
            .allow_scroll(false)
            .show(&mut cols[2], |p| {
                p.line(Line::new(
                    "log-prob chosen",
                    PlotPoints::from(pick(|p| p.chosen_logp)),
                ));
                p.line(Line::new(
                    "log-prob rejected",
                    PlotPoints::from(pick(|p| p.rejected_logp)),
                ));
            });
    });
}
