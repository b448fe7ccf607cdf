//! The Chat tab's test helpers: a tiny random model written once per test binary, the
//! app on the Chat tab with it loaded, typing a message, a random adapter strong enough to
//! change the replies, and two panes (base, and base plus such an adapter).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use candle_core::Device;
use eframe::egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use finetune_studio::app::{ModelSlot, StudioApp, Tab};
use finetune_studio::model::{load_hf_folder, Architecture};
use finetune_studio::testkit::write_tiny_model;

use crate::app_common::{harness, studio_home};

/// A tiny model written once per test binary.
pub fn tiny_model_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        write_tiny_model(&studio_home().join("tiny-chat"), Architecture::Llama, 11)
            .expect("tiny model")
    })
}

/// The app on the Chat tab with the tiny model loaded.
pub fn chat_harness() -> Harness<'static, StudioApp> {
    let dir = tiny_model_dir();
    let model = load_hf_folder(dir, &Device::Cpu).expect("load tiny model");
    let mut h = harness();
    h.state_mut().model = ModelSlot::Ready {
        spec: dir.display().to_string(),
        model: Arc::new(model),
        summary: "tiny".into(),
    };
    h.state_mut().state.tab = Tab::Chat;
    // The random tiny model replies with byte soup, which Markdown would reshape; as plain
    // text the tests find each reply whole.
    h.state_mut().chat.markdown = false;
    h.run_steps(2);
    h
}

pub fn type_message(h: &mut Harness<'static, StudioApp>, text: &str) {
    h.get_by_role_and_label(Role::MultilineTextInput, "Message")
        .focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::MultilineTextInput, "Message")
        .type_text(text);
    h.run_steps(1);
}

/// Every pane has finished its reply.
pub fn done(app: &StudioApp) -> bool {
    !app.chat.is_generating()
        && app
            .chat
            .panes
            .iter()
            .all(|p| p.last_reply().is_some_and(|t| t.stop_reason.is_some()))
}

/// The notices and the panes' errors, for assertion messages.
pub fn notices(h: &Harness<'static, StudioApp>) -> String {
    let errors: Vec<_> = h.state().chat.panes.iter().map(|p| &p.error).collect();
    format!("{:?} {errors:?}", h.state().notices.items())
}

/// A random LoRA adapter (gate and value projections), strong enough to change the replies.
pub fn write_random_adapter(dir: &Path) {
    finetune_studio::testkit::write_tiny_adapter(dir, Architecture::Llama, 17)
        .expect("write adapter");
}

/// Two panes: the base model, and the base plus a random adapter written to folder `name`
/// of the studio's home (tests run in parallel, each with its own name).
pub fn two_pane_harness(name: &str) -> Harness<'static, StudioApp> {
    let adapter = studio_home().join(name);
    write_random_adapter(&adapter);
    let mut h = chat_harness();
    h.get_by_label("2 panes").click();
    h.run_steps(2);
    let pane = &mut h.state_mut().chat.panes[1];
    pane.use_adapter = true;
    pane.adapter_dir = adapter.display().to_string();
    h.run_steps(1);
    h
}
