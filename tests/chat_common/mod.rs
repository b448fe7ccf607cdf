//! The Chat tab's test helpers: a tiny random model written once per test binary, the
//! app on the Chat tab with it loaded, typing a message, and a random adapter strong enough
//! to change the replies.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use candle_core::{Device, Tensor};
use eframe::egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use finetune_studio::app::{ModelSlot, StudioApp, Tab};
use finetune_studio::export::peft::{write_adapter, AdapterConfig, TargetModules};
use finetune_studio::model::lora::LoraTarget;
use finetune_studio::model::{load_hf_folder, tiny::write_tiny_model, Architecture};

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

/// A random LoRA adapter on the gate projections, strong enough to change the replies.
pub fn write_random_adapter(dir: &Path) {
    let cfg = finetune_studio::model::tiny::tiny_config(Architecture::Llama);
    let r = 4;
    let mut pairs = BTreeMap::new();
    for layer in 0..cfg.num_hidden_layers {
        let a = Tensor::randn(0f32, 1.0, (r, cfg.hidden_size), &Device::Cpu).expect("A");
        let b = Tensor::randn(0f32, 1.0, (cfg.intermediate_size, r), &Device::Cpu).expect("B");
        pairs.insert((layer, LoraTarget::GateProj), (a, b));
    }
    let config = AdapterConfig {
        peft_type: "LORA".into(),
        task_type: "CAUSAL_LM".into(),
        base_model_name_or_path: None,
        r,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        use_rslora: false,
        target_modules: TargetModules::List(vec!["gate_proj".into()]),
        bias: "none".into(),
        fan_in_fan_out: false,
        use_dora: false,
    };
    std::fs::create_dir_all(dir).expect("adapter dir");
    write_adapter(dir, &config, &pairs).expect("write adapter");
}
