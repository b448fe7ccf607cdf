//! Notifications: errors and notes shown in the corner of the window, readable first,
//! with the details (the full error chain) a click away. Errors stay until dismissed;
//! notes fade after a few seconds.

use eframe::egui;

/// How a notification looks and how long it stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

/// One notification.
#[derive(Debug, Clone)]
pub struct Notice {
    pub level: Level,
    /// One readable line: what the studio was doing.
    pub title: String,
    /// The error itself, possibly long.
    pub details: String,
    /// `ctx` time when it appeared (set when first shown).
    shown_at: Option<f64>,
    id: u64,
}

/// The list shown in the corner.
#[derive(Debug, Default)]
pub struct Notifications {
    items: Vec<Notice>,
    next_id: u64,
}

/// Seconds an info notice stays.
const INFO_SECS: f64 = 5.0;

impl Notifications {
    pub fn push(&mut self, level: Level, title: impl Into<String>, details: impl Into<String>) {
        let (title, details) = (title.into(), details.into());
        match level {
            Level::Error => tracing::warn!("{title}: {details}"),
            _ => tracing::info!("{title}: {details}"),
        }
        self.next_id += 1;
        self.items.push(Notice {
            level,
            title,
            details,
            shown_at: None,
            id: self.next_id,
        });
        // A runaway error loop must not fill the screen.
        if self.items.len() > 8 {
            self.items.remove(0);
        }
    }

    pub fn error(&mut self, title: impl Into<String>, details: impl Into<String>) {
        self.push(Level::Error, title, details);
    }

    pub fn info(&mut self, title: impl Into<String>) {
        self.push(Level::Info, title, "");
    }

    /// The notices now shown (tests read them).
    pub fn items(&self) -> &[Notice] {
        &self.items
    }

    /// Draws the notices over the bottom-right corner.
    pub fn show(&mut self, ctx: &egui::Context) {
        if self.items.is_empty() {
            return;
        }
        let now = ctx.input(|i| i.time);
        let mut dismissed = Vec::new();
        egui::Area::new(egui::Id::unique("notifications"))
            .anchor(egui::Align2::RIGHT_BOTTOM, egui::vec2(-12.0, -36.0))
            .order(egui::Order::Foreground)
            .show(ctx, |ui| {
                ui.set_max_width(420.0);
                for n in &mut self.items {
                    let shown_at = *n.shown_at.get_or_insert(now);
                    if n.level == Level::Info && now - shown_at > INFO_SECS {
                        dismissed.push(n.id);
                        continue;
                    }
                    notice_ui(ui, n, &mut dismissed);
                    ui.add_space(6.0);
                }
            });
        if self.items.iter().any(|n| n.level == Level::Info) {
            ctx.request_repaint_after(std::time::Duration::from_millis(500));
        }
        self.items.retain(|n| !dismissed.contains(&n.id));
    }
}

fn notice_ui(ui: &mut egui::Ui, n: &Notice, dismissed: &mut Vec<u64>) {
    let (color, icon) = match n.level {
        Level::Info => (ui.visuals().hyperlink_color, "i"),
        Level::Warning => (ui.visuals().warn_fg_color, "!"),
        Level::Error => (ui.visuals().error_fg_color, "!"),
    };
    egui::Frame::popup(ui.style())
        .stroke(egui::Stroke::new(1.0, color))
        .show(ui, |ui| {
            ui.set_width(400.0);
            ui.horizontal(|ui| {
                ui.colored_label(color, icon);
                ui.add(egui::Label::new(egui::RichText::new(&n.title).strong()).wrap());
                ui.with_layout(egui::Layout::right_to_left(egui::Align::TOP), |ui| {
                    if ui.small_button("×").on_hover_text("Dismiss").clicked() {
                        dismissed.push(n.id);
                    }
                });
            });
            if !n.details.is_empty() {
                egui::CollapsingHeader::new("Details")
                    .id_salt(("notice", n.id))
                    .show(ui, |ui| {
                        egui::ScrollArea::vertical()
                            .max_height(200.0)
                            .show(ui, |ui| {
                                ui.add(
                                    egui::Label::new(egui::RichText::new(&n.details).monospace())
                                        .wrap(),
                                );
                            });
                        if ui.small_button("Copy").clicked() {
                            ui.ctx().copy_text(format!("{}\n{}", n.title, n.details));
                        }
                    });
            }
        });
}
