//! GUI tests of the chat template picker and thinking switch on a tiny random model (ChatML
//! specials, ChatML as its own template): in the Train tab the choice goes into the run
//! config, with the warning of a template other than the model's own and of one whose
//! tokens the tokenizer lacks; in the Chat tab the thinking checkbox appears with a
//! template that has the switch and a reply renders with it; the Datasets tab counts the
//! records with reasoning blocks.

mod app_common;
mod chat_common;

use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;

use app_common::{open_dataset, step_until, studio_home};
use chat_common::{chat_harness, done, notices, tiny_model_dir, type_message};
use eframe::egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use finetune_studio::app::{AppOptions, ModelSlot, Tab};
use finetune_studio::model::load_hf_folder;
use finetune_studio::text::{NamedTemplate, TemplateChoice};

/// Opens the template combo box and picks `to`.
fn pick(h: &mut egui_kittest::Harness<'static, finetune_studio::app::StudioApp>, to: &str) {
    h.get_by_role_and_label(Role::ComboBox, "Chat template")
        .click_accesskit();
    h.run_steps(2);
    h.get_by_label(to).click_accesskit();
    h.run_steps(2);
    // Whether or not the click closed the list, Escape leaves it closed.
    h.key_press(eframe::egui::Key::Escape);
    h.run_steps(2);
}

#[test]
fn the_train_tabs_template_picker_sets_the_run_and_warns() {
    // A tall window: the whole form shows, so no click lands on a scrolled widget.
    let mut h = app_common::harness_sized(AppOptions::headless(), [1280.0, 1600.0]);
    let dir = tiny_model_dir();
    let model = load_hf_folder(dir, &Device::Cpu).expect("load tiny model");
    h.state_mut().model = ModelSlot::Ready {
        spec: dir.display().to_string(),
        model: Arc::new(model),
        summary: "tiny".into(),
    };
    h.state_mut().state.run_config.model.base = dir.display().to_string();
    h.state_mut().state.tab = Tab::Train;
    h.run_steps(3);
    assert!(
        h.query_by_label("Thinking").is_none(),
        "ChatML has no switch"
    );

    assert!(!h.state().state.run_config.data.strip_reasoning);
    h.get_by_label("Strip reasoning blocks").click_accesskit();
    h.run_steps(2);
    assert!(h.state().state.run_config.data.strip_reasoning);

    pick(&mut h, "alpaca");
    assert_eq!(
        h.state().state.run_config.model.template.as_deref(),
        Some("alpaca")
    );
    assert!(
        h.query_by_label_contains("is not the model's own")
            .is_some(),
        "the warning is shown"
    );

    pick(&mut h, "gemma");
    assert!(
        h.query_by_label_contains("needs the special token <start_of_turn>")
            .is_some(),
        "the missing token is named"
    );

    pick(&mut h, "qwen3");
    assert_eq!(h.state().state.run_config.model.enable_thinking, None);
    // A line appears in the status block above the form (as the estimate's "updating…"
    // does when a background result lands) between the frame the click was aimed at
    // and the frame that handles it: the click still reaches the checkbox.
    let targets = std::mem::take(&mut h.state_mut().state.run_config.lora.targets);
    h.get_by_label("Thinking").click_accesskit();
    h.run_steps(2);
    assert!(h
        .query_all_by_label_contains("choose at least one LoRA target layer")
        .next()
        .is_some());
    assert_eq!(
        h.state().state.run_config.model.enable_thinking,
        Some(false)
    );
    h.state_mut().state.run_config.lora.targets = targets;

    // Back to the model's own: no template in the config, no warning.
    pick(&mut h, "Model's own");
    assert_eq!(h.state().state.run_config.model.template, None);
    assert!(h
        .query_by_label_contains("is not the model's own")
        .is_none());
}

#[test]
fn the_chat_tab_renders_with_the_chosen_template_and_thinking_switch() {
    let mut h = chat_harness();
    h.state_mut().chat.max_new_tokens = 8;
    assert!(h.query_by_label("Thinking").is_none());
    pick(&mut h, "qwen3");
    assert_eq!(
        h.state().chat.template,
        TemplateChoice::Named(NamedTemplate::Qwen3)
    );
    h.get_by_label("Thinking").click_accesskit();
    h.run_steps(2);
    assert_eq!(h.state().chat.thinking, Some(false));
    type_message(&mut h, "Hi");
    h.get_by_label("Send").click();
    h.run_steps(1);
    assert!(
        step_until(&mut h, Duration::from_secs(60), done),
        "{}",
        notices(&h)
    );
    assert!(h.state().chat.panes[0].error.is_none(), "{}", notices(&h));

    // A template the tokenizer cannot write is the pane's error, naming both.
    pick(&mut h, "gemma");
    assert!(h
        .query_by_label_contains("needs the special token <start_of_turn>")
        .is_some());
    type_message(&mut h, "Again");
    h.get_by_label("Send").click();
    assert!(step_until(&mut h, Duration::from_secs(20), |app| app
        .chat
        .panes[0]
        .error
        .is_some()));
    let error = h.state().chat.panes[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("gemma") && error.contains("<start_of_turn>"),
        "{error}"
    );
}

#[test]
fn the_datasets_tab_counts_records_with_reasoning_blocks() {
    let dir = studio_home().join("reasoning-data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("think.jsonl");
    let record = |answer: &str, think: bool| {
        let content = if think {
            format!("<think>\nworking it out\n</think>\n\n{answer}")
        } else {
            answer.to_string()
        };
        serde_json::json!({"messages": [
            {"role": "user", "content": "question"},
            {"role": "assistant", "content": content},
        ]})
        .to_string()
    };
    let lines = [
        record("a", true),
        record("b", false),
        record("c", true),
        record("d", true),
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let mut h = app_common::harness();
    h.run_steps(2);
    open_dataset(&mut h, &path);
    assert!(
        step_until(&mut h, Duration::from_secs(20), |app| app
            .datasets
            .doc
            .as_ref()
            .is_some_and(|d| d.current_analysis().is_some())),
        "statistics never arrived"
    );
    h.run_steps(2);
    assert!(
        h.query_by_label("3 records with reasoning blocks")
            .is_some(),
        "the count is shown"
    );
}
