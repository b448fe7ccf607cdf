//! The virtualized records table: only the visible rows are laid out, so 100K rows
//! scroll as smoothly as ten. Each row shows the record number, its flags, its
//! approximate token length, its turn count, its scores once scored (loss, IFD, and the
//! change under the comparison) and the start of its prompt and response.

use eframe::egui::{self, Align2, Color32, FontId, Rect, Sense, Vec2};

use crate::data::{Conversation, Role};
use crate::worker::Analysis;

use super::dataset_filter::Rows;
use super::dataset_scores::RecordScores;

const ROW_HEIGHT: f32 = 22.0;
const COL_NUM: f32 = 64.0;
const COL_FLAGS: f32 = 56.0;
const COL_TOKENS: f32 = 64.0;
const COL_TURNS: f32 = 48.0;
const COL_SCORE: f32 = 60.0;

/// The text a row shows for a record: its first prompt and first response, on one line.
pub fn preview(c: &Conversation) -> (String, String) {
    let first = |pred: &dyn Fn(Role) -> bool| {
        c.messages
            .iter()
            .find(|m| pred(m.role))
            .map(|m| one_line(&m.content, 240))
            .unwrap_or_default()
    };
    (
        first(&|r| !r.is_trained() && r != Role::System),
        first(&|r| r.is_trained()),
    )
}

/// The first `max_chars` characters of `s` with line breaks as spaces.
pub fn one_line(s: &str, max_chars: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

fn contains(sorted: &[usize], i: usize) -> bool {
    sorted.binary_search(&i).is_ok()
}

/// Draws the table. Returns the record clicked, if any. `scroll_to` brings a table
/// position into view.
pub fn table_ui(
    ui: &mut egui::Ui,
    records: &[Conversation],
    rows: Rows<'_>,
    analysis: Option<&Analysis>,
    selected: Option<usize>,
    scroll_to: Option<usize>,
    scores: &RecordScores,
) -> Option<usize> {
    let mut clicked = None;
    let shown = scores.columns();
    header_ui(ui, shown);
    let mut area = egui::ScrollArea::vertical()
        .id_salt("dataset-table")
        .auto_shrink([false, false]);
    if let Some(pos) = scroll_to {
        let spacing = ui.spacing().item_spacing.y;
        let offset = (pos as f32 * (ROW_HEIGHT + spacing) - 3.0 * ROW_HEIGHT).max(0.0);
        area = area.vertical_scroll_offset(offset);
    }
    area.show_rows(ui, ROW_HEIGHT, rows.len(), |ui, range| {
        for pos in range {
            let Some(idx) = rows.get(pos) else { continue };
            let Some(c) = records.get(idx) else { continue };
            if row_ui(ui, idx, c, analysis, selected == Some(idx), scores, shown).clicked() {
                clicked = Some(idx);
            }
        }
    });
    clicked
}

/// Which score columns show: (loss and IFD, the change under the comparison).
type Shown = (bool, bool);

/// The columns' rectangles: number, flags, tokens, turns, loss, IFD, change, prompt,
/// response (a score column not shown has no width).
fn columns(rect: Rect, (scored, compared): Shown) -> [Rect; 9] {
    let score = if scored { COL_SCORE } else { 0.0 };
    let change = if compared { COL_SCORE } else { 0.0 };
    let fixed = COL_NUM + COL_FLAGS + COL_TOKENS + COL_TURNS + 2.0 * score + change;
    let rest = (rect.width() - fixed).max(80.0) * 0.5;
    let widths = [
        COL_NUM, COL_FLAGS, COL_TOKENS, COL_TURNS, score, score, change, rest, rest,
    ];
    let mut x = rect.left();
    widths.map(|w| {
        let r = Rect::from_min_size(egui::pos2(x, rect.top()), Vec2::new(w, rect.height()));
        x += w;
        r
    })
}

fn header_ui(ui: &mut egui::Ui, shown: Shown) {
    let (rect, _) =
        ui.allocate_exact_size(Vec2::new(ui.available_width(), ROW_HEIGHT), Sense::hover());
    let p = ui.painter();
    p.rect_filled(rect, 0.0, ui.visuals().faint_bg_color);
    let font = FontId::proportional(13.0);
    let color = ui.visuals().strong_text_color();
    let names = [
        "#", "Flags", "Tokens", "Turns", "Loss", "IFD", "Change", "Prompt", "Response",
    ];
    for (r, name) in columns(rect, shown).iter().zip(names) {
        if r.width() == 0.0 {
            continue;
        }
        p.text(
            r.left_center() + Vec2::new(6.0, 0.0),
            Align2::LEFT_CENTER,
            name,
            font.clone(),
            color,
        );
    }
}

fn row_ui(
    ui: &mut egui::Ui,
    idx: usize,
    c: &Conversation,
    analysis: Option<&Analysis>,
    selected: bool,
    scores: &RecordScores,
    shown: Shown,
) -> egui::Response {
    let (rect, response) =
        ui.allocate_exact_size(Vec2::new(ui.available_width(), ROW_HEIGHT), Sense::click());
    let label = format!("Row {}", idx + 1);
    response.widget_info(|| egui::WidgetInfo::selected(egui::Role::Button, true, selected, &label));
    if !ui.is_rect_visible(rect) {
        return response;
    }
    let visuals = ui.visuals();
    let p = ui.painter();
    if selected {
        p.rect_filled(rect, 2.0, visuals.selection.bg_fill);
    } else if response.hovered() {
        p.rect_filled(rect, 2.0, visuals.widgets.hovered.weak_bg_fill);
    } else if idx % 2 == 1 {
        p.rect_filled(rect, 0.0, visuals.faint_bg_color);
    }
    let text_color = if selected {
        visuals.selection.stroke.color
    } else {
        visuals.text_color()
    };
    let weak = visuals.weak_text_color();
    let font = FontId::proportional(13.5);
    let cols = columns(rect, shown);
    let text_at = |r: Rect, s: &str, color: Color32| {
        let clip = p.with_clip_rect(r.shrink2(Vec2::new(4.0, 0.0)));
        clip.text(
            r.left_center() + Vec2::new(6.0, 0.0),
            Align2::LEFT_CENTER,
            s,
            font.clone(),
            color,
        );
    };
    text_at(cols[0], &(idx + 1).to_string(), weak);

    if let Some(a) = analysis {
        let mut flags: Vec<(&str, Color32)> = Vec::new();
        if contains(&a.invalid, idx) {
            flags.push(("!", visuals.error_fg_color));
        }
        if contains(&a.duplicates, idx) {
            flags.push(("D", visuals.warn_fg_color));
        }
        if contains(&a.too_long, idx) {
            flags.push(("L", visuals.warn_fg_color));
        }
        if contains(&a.empty, idx) {
            flags.push(("E", visuals.warn_fg_color));
        }
        let mut x = cols[1].left() + 6.0;
        for (f, color) in flags {
            p.text(
                egui::pos2(x, rect.center().y),
                Align2::LEFT_CENTER,
                f,
                FontId::monospace(13.0),
                color,
            );
            x += 11.0;
        }
        if let Some(t) = a.stats.total_tokens.get(idx) {
            text_at(cols[2], &t.to_string(), text_color);
        }
    }
    text_at(cols[3], &c.messages.len().to_string(), text_color);
    if shown.0 {
        match scores.primary.of(c) {
            Some(Ok(s)) => {
                text_at(cols[4], &format!("{:.3}", s.loss), text_color);
                let ifd = s.ifd.map_or("—".to_string(), |v| format!("{v:.3}"));
                text_at(cols[5], &ifd, text_color);
            }
            Some(Err(_)) => text_at(cols[4], "—", weak),
            None => {}
        }
    }
    if shown.1 {
        if let (Some(Ok(a)), Some(Ok(b))) = (scores.primary.of(c), scores.compare.of(c)) {
            let d = b.loss - a.loss;
            let color = if d < 0.0 {
                Color32::from_rgb(60, 170, 110)
            } else {
                visuals.warn_fg_color
            };
            text_at(cols[6], &format!("{d:+.3}"), color);
        }
    }
    let (prompt, reply) = preview(c);
    text_at(cols[7], &prompt, text_color);
    text_at(cols[8], &reply, weak);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_cuts_and_flattens() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("héllo world", 5), "héllo…");
    }
}
