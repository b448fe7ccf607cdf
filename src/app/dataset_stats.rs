//! The statistics panel (token-length histogram with a marker at the maximum sequence
//! length, summary figures, role and turn counts) and the validation problems list,
//! whose entries jump to their record.

use eframe::egui;
use egui_plot::{Bar, BarChart, Plot, VLine};

use super::busy::Busy;
use crate::data::Severity;
use crate::worker::Analysis;

/// Draws the statistics of `a`; `max_len` is the run's maximum sequence length.
pub fn stats_ui(ui: &mut egui::Ui, a: &Analysis, max_len: usize, stale: bool) {
    let s = &a.stats;
    ui.horizontal_wrapped(|ui| {
        ui.strong(format!("{} records", s.records));
        ui.separator();
        ui.label(format!(
            "tokens per record: min {} · median {} · p90 {} · p99 {} · max {} · mean {:.0}",
            s.total.min, s.total.p50, s.total.p90, s.total.p99, s.total.max, s.total.mean
        ))
        .on_hover_text(format!("Token counts are {}", s.counter));
        ui.separator();
        ui.label(format!("{} over {max_len}", s.over_max.len()));
        ui.separator();
        let roles: Vec<String> = s
            .role_counts
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        ui.label(format!("turns: {}", roles.join(" · ")));
        ui.separator();
        ui.label(format!(
            "{} records with reasoning blocks",
            s.records_with_reasoning
        ))
        .on_hover_text(
            "Records whose assistant turns hold <think>…</think>; a run keeps them, or strips them with \"Strip reasoning blocks\" in the Train tab",
        );
        if stale {
            ui.separator();
            ui.add(Busy);
            ui.weak("updating…");
        }
    });
    let h = &s.total_histogram;
    let bars: Vec<Bar> = h
        .counts
        .iter()
        .enumerate()
        .filter_map(|(i, &count)| {
            let lo = *h.edges.get(i)? as f64;
            let hi = *h.edges.get(i + 1)? as f64;
            Some(
                Bar::new((lo + hi) / 2.0, count as f64)
                    .width((hi - lo) * 0.95)
                    .name(format!("{lo:.0}–{hi:.0} tokens")),
            )
        })
        .collect();
    let marker_color = ui.visuals().error_fg_color;
    Plot::new("token-length-histogram")
        .height(ui.available_height().clamp(80.0, 260.0))
        .x_axis_label(format!(
            "tokens per record ({}); red line: max sequence length {max_len}",
            s.counter
        ))
        .y_axis_label("records")
        .allow_scroll(false)
        .include_y(0.0)
        .include_x(0.0)
        .include_x(max_len as f64 * 1.05)
        .show(ui, |p| {
            p.bar_chart(BarChart::new("records", bars));
            p.vline(
                VLine::new(format!("max length {max_len}"), max_len as f64)
                    .color(marker_color)
                    .width(2.0),
            );
        });
}

/// Draws the problems list; returns the record of the problem clicked.
pub fn problems_ui(ui: &mut egui::Ui, a: &Analysis) -> Option<usize> {
    let mut jump = None;
    if a.problems.is_empty() {
        ui.weak("No validation problems.");
        return None;
    }
    let errors = a.problems.iter().filter(|p| p.is_error()).count();
    ui.label(format!(
        "{errors} errors, {} warnings; click one to open its record",
        a.problems.len() - errors
    ));
    let row_h = ui.text_style_height(&egui::TextStyle::Body);
    egui::ScrollArea::vertical()
        .id_salt("problems")
        .auto_shrink([false, false])
        .show_rows(ui, row_h, a.problems.len(), |ui, range| {
            for p in &a.problems[range] {
                let (icon, color) = match p.severity {
                    Severity::Error => ("■", ui.visuals().error_fg_color),
                    Severity::Warning => ("!", ui.visuals().warn_fg_color),
                };
                let place = match (p.record, p.line) {
                    (Some(r), Some(l)) => format!("record {} (line {l})", r + 1),
                    (Some(r), None) => format!("record {}", r + 1),
                    (None, Some(l)) => format!("line {l}"),
                    (None, None) => "file".into(),
                };
                let field = p
                    .field
                    .as_deref()
                    .map(|f| format!(" {f}:"))
                    .unwrap_or_default();
                let text = egui::RichText::new(format!("{icon} {place}{field} {}", p.message))
                    .color(color);
                let r = ui.add(egui::Button::new(text).frame(false).truncate());
                if r.clicked() {
                    jump = p.record;
                }
            }
        });
    jump
}
