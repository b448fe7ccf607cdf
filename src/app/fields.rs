//! A labelled single-line text field: the label, then the field, which the label names
//! (for screen readers, and for the GUI tests that find fields by their label).

use eframe::egui;

/// `label`, then a field `width` wide editing `text` with `hint` shown while it is empty.
pub fn labelled_line(
    ui: &mut egui::Ui,
    label: &str,
    text: &mut String,
    hint: &str,
    width: f32,
) -> egui::Response {
    let l = ui.label(label);
    ui.add(
        egui::TextEdit::singleline(text)
            .hint_text(hint)
            .desired_width(width),
    )
    .labelled_by(l.id)
}
