//! The studio's busy indicator: a ring of dots whose bright dot steps round four times a
//! second.
//!
//! egui's `Spinner` asks for a repaint on every frame it is on screen, so while a job ran
//! (a training run of hours, a batch of replies, an export) the window painted at the
//! display's rate. Where painting runs on the CPU (no GPU, a remote or virtual display)
//! that took about one of two cores from the job: a run that trained at 244 tokens/s from
//! the command line trained at 124–137 in the window. This indicator asks for its next
//! frame one step later: at eight steps a second the window trained at 191–216 tokens/s,
//! at four (this) at 237–244, the command line's rate.

use std::time::Duration;

use eframe::egui;

/// Time between the indicator's steps, and so between the repaints it asks for.
pub const STEP: Duration = Duration::from_millis(250);
/// Dots round the ring.
const DOTS: usize = 8;

/// The busy indicator, a line of text high: `ui.add(Busy)`, or `ui.add_visible(busy, Busy)`
/// to keep its room while idle.
#[derive(Debug, Clone, Copy, Default)]
pub struct Busy;

impl egui::Widget for Busy {
    fn ui(self, ui: &mut egui::Ui) -> egui::Response {
        let size = ui.style().spacing.interact_size.y;
        let (rect, response) = ui.allocate_exact_size(egui::vec2(size, size), egui::Sense::hover());
        response.widget_info(|| egui::WidgetInfo::new(egui::Role::ProgressIndicator));
        if ui.is_rect_visible(rect) {
            ui.ctx().request_repaint_after(STEP);
            let step = (ui.input(|i| i.time) / STEP.as_secs_f64()) as usize % DOTS;
            let radius = rect.height() * 0.5 - 3.0;
            let color = ui.visuals().strong_text_color();
            for dot in 0..DOTS {
                let angle = dot as f32 / DOTS as f32 * std::f32::consts::TAU;
                let at = rect.center() + radius * egui::vec2(angle.cos(), angle.sin());
                // The bright dot, and a tail fading behind it.
                let behind = (step + DOTS - dot) % DOTS;
                let fade = 1.0 - 0.85 * behind as f32 / DOTS as f32;
                ui.painter()
                    .circle_filled(at, 1.7, color.gamma_multiply(fade));
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How soon the frame that shows `widget` asks for the next one.
    fn repaint_delay(widget: impl egui::Widget + Copy) -> Duration {
        let ctx = egui::Context::default();
        let mut delay = Duration::MAX;
        // A new context asks for two frames at once while it settles its layout; the
        // widget's own request shows from the third on.
        for _ in 0..4 {
            let out = ctx.run_ui(egui::RawInput::default(), |ui| {
                ui.add(widget);
            });
            delay = out.viewport_output[&egui::ViewportId::ROOT].repaint_delay;
        }
        delay
    }

    #[test]
    fn the_indicator_asks_for_a_frame_a_step_later_where_egui_spinner_asks_for_the_next() {
        #[derive(Clone, Copy)]
        struct EguiSpinner;
        impl egui::Widget for EguiSpinner {
            // The widget the studio replaces, for the comparison.
            #[allow(clippy::disallowed_types)]
            fn ui(self, ui: &mut egui::Ui) -> egui::Response {
                ui.add(egui::Spinner::new())
            }
        }
        assert_eq!(repaint_delay(EguiSpinner), Duration::ZERO);
        let delay = repaint_delay(Busy);
        assert!(
            delay > STEP / 2 && delay <= STEP,
            "the indicator asked for a repaint in {delay:?}"
        );
    }
}
