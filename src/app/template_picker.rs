//! The chat template picker the Train and Chat tabs share: the model's own, a named
//! template, or a Jinja file (typed path); the thinking switch's checkbox where the
//! template has one; and the warnings that go with a choice (not the model's own, a
//! special token the tokenizer lacks). Everything it checks is in memory: a file is only
//! read by the job that uses it.

use eframe::egui;

use crate::model::Model;
use crate::text::named_template::references_thinking;
use crate::text::{NamedTemplate, TemplateChoice, TemplateSource};

/// The picker: a combo box, and a path field when "A file…" is chosen. `own` names the
/// first entry ("Model's own", or "Model's own / the adapter's" in the Chat tab). Returns
/// whether the choice changed.
pub fn picker_ui(ui: &mut egui::Ui, id: &str, own: &str, choice: &mut TemplateChoice) -> bool {
    let before = choice.clone();
    let selected = match choice {
        TemplateChoice::Own => own.to_string(),
        TemplateChoice::Named(n) => n.name().to_string(),
        TemplateChoice::File(_) => "A file…".to_string(),
    };
    ui.horizontal(|ui| {
        let label = ui.label("Chat template");
        egui::ComboBox::from_id_salt(id)
            .selected_text(selected)
            .show_ui(ui, |ui| {
                ui.selectable_value(choice, TemplateChoice::Own, own);
                for n in NamedTemplate::ALL {
                    ui.selectable_value(choice, TemplateChoice::Named(n), n.name());
                }
                let is_file = matches!(choice, TemplateChoice::File(_));
                if ui.selectable_label(is_file, "A file…").clicked() && !is_file {
                    *choice = TemplateChoice::File(Default::default());
                }
            })
            .response
            .labelled_by(label.id)
            .on_hover_text(
                "The Jinja chat template prompts are rendered with. A run remembers it: its \
                 adapters and exports carry it, and chatting with the adapter uses it.",
            );
    });
    if let TemplateChoice::File(path) = choice {
        let mut text = path.display().to_string();
        if ui
            .add(
                egui::TextEdit::singleline(&mut text)
                    .hint_text("/path/to/template.jinja")
                    .desired_width(f32::INFINITY),
            )
            .changed()
        {
            *path = text.into();
        }
    }
    *choice != before
}

/// Whether the template `choice` stands for has Qwen3's thinking switch (a file may:
/// it is not read here).
pub fn has_thinking_switch(choice: &TemplateChoice, model: Option<&Model>) -> bool {
    match choice {
        TemplateChoice::Own => model.is_some_and(|m| m.template.has_thinking_switch()),
        TemplateChoice::Named(n) => references_thinking(n.source()),
        TemplateChoice::File(_) => true,
    }
}

/// The thinking checkbox; `value` is `None` for the template's default.
pub fn thinking_ui(ui: &mut egui::Ui, value: &mut Option<bool>) {
    let mut on = value.unwrap_or(true);
    if ui
        .checkbox(&mut on, "Thinking")
        .on_hover_text(
            "Passed to the template as enable_thinking: off makes Qwen3-style templates \
             close the reasoning block before the answer",
        )
        .changed()
    {
        *value = Some(on);
    }
}

/// The warnings a choice brings on `model`: a named template whose special tokens the
/// tokenizer lacks, and a template other than the model's own.
pub fn warnings(choice: &TemplateChoice, model: Option<&Model>) -> Vec<String> {
    let Some(model) = model else {
        return Vec::new();
    };
    match choice {
        TemplateChoice::Own => Vec::new(),
        TemplateChoice::Named(n) => {
            let mut out: Vec<String> = n
                .required_tokens()
                .iter()
                .filter(|t| !model.is_single_token(t))
                .map(|t| {
                    format!(
                        "{} needs the special token {t}, which {}'s tokenizer does not have",
                        n.name(),
                        model.name
                    )
                })
                .collect();
            out.extend(model.template_differs(&TemplateSource::named(*n)));
            out
        }
        TemplateChoice::File(p) if model.own_template => vec![format!(
            "the template file {} stands in for the model's own template",
            p.display()
        )],
        TemplateChoice::File(_) => Vec::new(),
    }
}

/// Shows `warnings` in the warning colour.
pub fn warnings_ui(ui: &mut egui::Ui, warnings: &[String]) {
    for w in warnings {
        ui.colored_label(ui.visuals().warn_fg_color, format!("! {w}"));
    }
}
