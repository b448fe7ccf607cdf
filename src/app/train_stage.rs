//! The Train tab's stage section: SFT on instruction data, or DPO / ORPO on preference
//! pairs, with β, DPO's reference (the base, or the adapter the run starts from) and the
//! adapter to start from (e.g. an SFT run's `adapter/`). Edits the [`RunConfig`] in place.

use std::path::PathBuf;

use eframe::egui;

use crate::train::config::{Reference, Stage};
use crate::train::RunConfig;

/// The stage section. `open_is_preference` says whether the Datasets tab's open file is
/// preference data (`None` when nothing is open).
pub fn stage_ui(ui: &mut egui::Ui, cfg: &mut RunConfig, open_is_preference: Option<bool>) {
    ui.strong("Stage");
    ui.horizontal(|ui| {
        for s in Stage::ALL {
            ui.radio_value(&mut cfg.stage, s, s.label()).on_hover_text(match s {
                Stage::Sft => "Supervised fine-tuning on instruction data",
                Stage::Dpo => "Direct preference optimization on chosen / rejected pairs, against a frozen reference",
                Stage::Orpo => "Odds-ratio preference optimization: SFT on the chosen replies plus an odds-ratio term; no reference",
            });
        }
    });
    match (open_is_preference, cfg.stage.is_preference()) {
        (Some(true), false) => {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                "! The open dataset is preference data: choose DPO or ORPO.",
            );
        }
        (Some(false), true) => {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                "! The open dataset is instruction data: DPO and ORPO need chosen / rejected pairs.",
            );
        }
        _ => {}
    }
    if cfg.stage.is_preference() {
        egui::Grid::new("stage-grid").num_columns(2).show(ui, |ui| {
            let tip = if cfg.stage == Stage::Dpo {
                "DPO's β: how strongly the policy is held near the reference (TRL's default 0.1)"
            } else {
                "ORPO's λ (TRL's `beta`): the weight of the odds-ratio term (default 0.1)"
            };
            ui.label("β").on_hover_text(tip);
            ui.add(
                egui::DragValue::new(&mut cfg.preference.beta)
                    .range(1e-4..=10.0)
                    .speed(0.01),
            )
            .on_hover_text(tip);
            ui.end_row();
            if cfg.stage == Stage::Dpo {
                ui.label("Reference").on_hover_text(
                    "What the rewards are measured against; no second copy of the model is loaded",
                );
                ui.horizontal(|ui| {
                    ui.radio_value(
                        &mut cfg.preference.reference,
                        Reference::Base,
                        "Base (adapter off)",
                    );
                    ui.radio_value(
                        &mut cfg.preference.reference,
                        Reference::InitAdapter,
                        "The starting adapter, frozen",
                    );
                });
                ui.end_row();
            }
        });
    }
    ui.horizontal(|ui| {
        ui.label("Start from adapter").on_hover_text(
            "A PEFT adapter folder (an SFT run's adapter/) whose values the run starts from; rank, alpha and targets must match",
        );
        let mut text = cfg
            .init_adapter
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if ui
            .add(
                egui::TextEdit::singleline(&mut text)
                    .hint_text("(none: a fresh adapter)")
                    .desired_width(ui.available_width()),
            )
            .changed()
        {
            let t = text.trim();
            cfg.init_adapter = (!t.is_empty()).then(|| PathBuf::from(t));
        }
    });
}
