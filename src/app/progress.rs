//! The progress bar of a job that counts items (replies, suite replies, judged pairs,
//! scored records): the share done, and a label the caller words.

use eframe::egui;

/// `done` of `total` as a bar `width` wide labelled `text` (empty while `total` is 0).
pub fn count_bar(ui: &mut egui::Ui, (done, total): (usize, usize), width: f32, text: String) {
    let frac = if total == 0 {
        0.0
    } else {
        done as f32 / total as f32
    };
    ui.add(egui::ProgressBar::new(frac).desired_width(width).text(text));
}
