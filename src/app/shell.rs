//! The studio window's shell: loads the model on a worker thread (fetching the default
//! model first when it is missing) and shows what is loaded.

use crossbeam_channel::{Receiver, TryRecvError};
use eframe::egui;

/// What the model-loading worker reports.
enum LoadEvent {
    Progress(String),
    Loaded { name: String, summary: String },
    Failed(String),
}

enum ModelState {
    Loading { lines: Vec<String> },
    Ready { name: String, summary: String },
    Failed(String),
}

pub struct StudioApp {
    model: ModelState,
    events: Receiver<LoadEvent>,
}

fn spawn_loader(spec: String, ctx: egui::Context) -> Receiver<LoadEvent> {
    let (tx, rx) = crossbeam_channel::bounded(64);
    let spawned = std::thread::Builder::new().name("model-loader".into()).spawn(move || {
        let send = |e: LoadEvent| {
            let _ = tx.send(e);
            ctx.request_repaint();
        };
        if spec == "default" && crate::model::source::find_default().is_none() {
            let r = crate::model::fetch::fetch_default(&mut |line| send(LoadEvent::Progress(line.to_string())));
            if let Err(e) = r {
                send(LoadEvent::Failed(e.to_string()));
                return;
            }
        }
        send(LoadEvent::Progress(format!("loading {spec}")));
        match crate::model::load(&spec) {
            Ok(m) => {
                let c = m.config();
                let summary = format!(
                    "{} · {} layers · hidden {} · {} heads ({} KV) · vocab {} · {:.0}M parameters",
                    c.architecture.model_type(),
                    c.num_hidden_layers,
                    c.hidden_size,
                    c.num_attention_heads,
                    c.num_key_value_heads,
                    c.vocab_size,
                    c.parameter_count() as f64 / 1e6
                );
                send(LoadEvent::Loaded { name: m.name.clone(), summary });
            }
            Err(e) => send(LoadEvent::Failed(e.to_string())),
        }
    });
    if let Err(e) = spawned {
        let (tx2, rx2) = crossbeam_channel::bounded(1);
        let _ = tx2.send(LoadEvent::Failed(format!("cannot start the loader thread: {e}")));
        return rx2;
    }
    rx
}

impl StudioApp {
    pub fn new(cc: &eframe::CreationContext<'_>, model: Option<String>) -> Self {
        let spec = model.unwrap_or_else(|| "default".into());
        let events = spawn_loader(spec, cc.egui_ctx.clone());
        Self { model: ModelState::Loading { lines: Vec::new() }, events }
    }
}

impl eframe::App for StudioApp {
    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        loop {
            match self.events.try_recv() {
                Ok(LoadEvent::Progress(line)) => {
                    if let ModelState::Loading { lines } = &mut self.model {
                        lines.push(line);
                    }
                }
                Ok(LoadEvent::Loaded { name, summary }) => self.model = ModelState::Ready { name, summary },
                Ok(LoadEvent::Failed(e)) => self.model = ModelState::Failed(e),
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::CentralPanel::default().show(ui, |ui| {
            ui.heading("finetune-studio");
            ui.separator();
            match &self.model {
                ModelState::Loading { lines } => {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("Preparing the model…");
                    });
                    for l in lines {
                        ui.monospace(l);
                    }
                }
                ModelState::Ready { name, summary } => {
                    ui.label(egui::RichText::new(format!("Model: {name}")).strong());
                    ui.label(summary);
                }
                ModelState::Failed(e) => {
                    ui.colored_label(ui.visuals().error_fg_color, "The model could not be loaded:");
                    ui.monospace(e);
                }
            }
        });
    }
}
