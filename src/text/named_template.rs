//! The chat templates a run or a chat may choose instead of the model's own: the named
//! ones built in (`assets/templates/*.jinja`: chatml, gemma, llama3, mistral, alpaca,
//! plain, qwen3), or a Jinja file. Each named template knows the special tokens it needs
//! from the tokenizer, the text markers a reply that missed its end token stops at, and
//! its Ollama `TEMPLATE`; [`TemplateChoice`] is what `run.toml`'s `template` and the
//! `--template` flags hold.

use std::path::{Path, PathBuf};

use super::TextError;

/// A chat template built into the studio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamedTemplate {
    Chatml,
    Gemma,
    Llama3,
    Mistral,
    Alpaca,
    Plain,
    Qwen3,
}

impl NamedTemplate {
    /// Every named template, in the order pickers list them.
    pub const ALL: [NamedTemplate; 7] = [
        NamedTemplate::Chatml,
        NamedTemplate::Gemma,
        NamedTemplate::Llama3,
        NamedTemplate::Mistral,
        NamedTemplate::Alpaca,
        NamedTemplate::Plain,
        NamedTemplate::Qwen3,
    ];

    /// The name `run.toml` and `--template` use.
    pub fn name(self) -> &'static str {
        match self {
            NamedTemplate::Chatml => "chatml",
            NamedTemplate::Gemma => "gemma",
            NamedTemplate::Llama3 => "llama3",
            NamedTemplate::Mistral => "mistral",
            NamedTemplate::Alpaca => "alpaca",
            NamedTemplate::Plain => "plain",
            NamedTemplate::Qwen3 => "qwen3",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The Jinja source.
    pub fn source(self) -> &'static str {
        match self {
            NamedTemplate::Chatml => include_str!("../../assets/templates/chatml.jinja"),
            NamedTemplate::Gemma => include_str!("../../assets/templates/gemma.jinja"),
            NamedTemplate::Llama3 => include_str!("../../assets/templates/llama3.jinja"),
            NamedTemplate::Mistral => include_str!("../../assets/templates/mistral.jinja"),
            NamedTemplate::Alpaca => include_str!("../../assets/templates/alpaca.jinja"),
            NamedTemplate::Plain => include_str!("../../assets/templates/plain.jinja"),
            NamedTemplate::Qwen3 => include_str!("../../assets/templates/qwen3.jinja"),
        }
    }

    /// Special tokens the template writes, which the tokenizer must hold as single tokens;
    /// the templates that end a reply with the tokenizer's EOS need that instead
    /// ([`NamedTemplate::ends_with_eos`]).
    pub fn required_tokens(self) -> &'static [&'static str] {
        match self {
            NamedTemplate::Chatml | NamedTemplate::Qwen3 => &["<|im_start|>", "<|im_end|>"],
            NamedTemplate::Gemma => &["<start_of_turn>", "<end_of_turn>"],
            NamedTemplate::Llama3 => &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
            NamedTemplate::Mistral | NamedTemplate::Alpaca | NamedTemplate::Plain => &[],
        }
    }

    /// Whether a reply ends with the tokenizer's EOS token (so the tokenizer must have one).
    pub fn ends_with_eos(self) -> bool {
        matches!(
            self,
            NamedTemplate::Mistral | NamedTemplate::Alpaca | NamedTemplate::Plain
        )
    }

    /// Text that starts the next turn: a reply that runs past its end token stops there.
    pub fn stop_strings(self) -> &'static [&'static str] {
        match self {
            NamedTemplate::Mistral => &["[INST]"],
            NamedTemplate::Alpaca => &["### Instruction:"],
            NamedTemplate::Plain => &["\nUser:"],
            _ => &[],
        }
    }

    /// The template as an Ollama `TEMPLATE` (Go template text). `eos` is the tokenizer's
    /// EOS token, which the templates that end replies with it write.
    pub fn ollama_template(self, eos: &str) -> String {
        match self {
            NamedTemplate::Chatml | NamedTemplate::Qwen3 => "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n".into(),
            NamedTemplate::Llama3 => "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n".into(),
            NamedTemplate::Gemma => "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}user{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n".into(),
            NamedTemplate::Mistral => format!("{{{{- range .Messages }}}}{{{{ if eq .Role \"assistant\" }}}} {{{{ .Content }}}}{eos}{{{{ else if eq .Role \"system\" }}}}{{{{ .Content }}}}\n\n{{{{ else }}}}[INST] {{{{ .Content }}}} [/INST]{{{{ end }}}}{{{{ end }}}}"),
            NamedTemplate::Alpaca => format!("{{{{- range .Messages }}}}{{{{ if eq .Role \"assistant\" }}}}{{{{ .Content }}}}{eos}\n\n{{{{ else if eq .Role \"system\" }}}}{{{{ .Content }}}}\n\n{{{{ else }}}}### Instruction:\n{{{{ .Content }}}}\n\n### Response:\n{{{{ end }}}}{{{{ end }}}}"),
            NamedTemplate::Plain => format!("{{{{- range .Messages }}}}{{{{ if eq .Role \"assistant\" }}}}Assistant: {{{{ .Content }}}}{eos}\n\n{{{{ else if eq .Role \"system\" }}}}{{{{ .Content }}}}\n\n{{{{ else }}}}User: {{{{ .Content }}}}\n\n{{{{ end }}}}{{{{ end }}}}Assistant:"),
        }
    }

    /// The named template whose markup `source` writes, judged by its markers: what an
    /// export of a model's own template tells Ollama.
    pub fn detect(source: &str) -> Option<Self> {
        if source.contains("<|im_start|>") {
            Some(if references_thinking(source) {
                NamedTemplate::Qwen3
            } else {
                NamedTemplate::Chatml
            })
        } else if source.contains("<|start_header_id|>") {
            Some(NamedTemplate::Llama3)
        } else if source.contains("<start_of_turn>") {
            Some(NamedTemplate::Gemma)
        } else if source.contains("[INST]") {
            Some(NamedTemplate::Mistral)
        } else if source.contains("### Instruction:") {
            Some(NamedTemplate::Alpaca)
        } else {
            Self::ALL.into_iter().find(|t| t.source() == source)
        }
    }
}

/// End-of-turn markers that a template written by hand may use; where the template writes
/// one and the tokenizer holds it as a token, a reply stops at it.
pub const END_OF_TURN_MARKERS: [&str; 5] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
];

/// Whether a template has Qwen3's thinking switch (reads `enable_thinking`).
pub fn references_thinking(source: &str) -> bool {
    source.contains("enable_thinking")
}

/// Which template a run or a chat uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TemplateChoice {
    /// The model's own (or, chatting with an adapter, the one its run trained with).
    #[default]
    Own,
    Named(NamedTemplate),
    /// A Jinja file.
    File(PathBuf),
}

/// A chosen template's text, with the name messages give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSource {
    /// `chatml`, or a file's path.
    pub name: String,
    pub source: String,
    pub named: Option<NamedTemplate>,
}

impl TemplateSource {
    pub fn named(t: NamedTemplate) -> Self {
        TemplateSource {
            name: t.name().into(),
            source: t.source().into(),
            named: Some(t),
        }
    }
}

impl TemplateChoice {
    /// `own` (or nothing), a template's name, or else a file's path.
    pub fn parse(text: &str) -> Self {
        let t = text.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("own") {
            TemplateChoice::Own
        } else if let Some(n) = NamedTemplate::from_name(t) {
            TemplateChoice::Named(n)
        } else {
            TemplateChoice::File(PathBuf::from(t))
        }
    }

    /// What `run.toml` stores: `None` for the model's own.
    pub fn to_config(&self) -> Option<String> {
        match self {
            TemplateChoice::Own => None,
            TemplateChoice::Named(n) => Some(n.name().into()),
            TemplateChoice::File(p) => Some(p.display().to_string()),
        }
    }

    /// For pickers and messages.
    pub fn label(&self) -> String {
        match self {
            TemplateChoice::Own => "model's own".into(),
            TemplateChoice::Named(n) => n.name().into(),
            TemplateChoice::File(p) => p.display().to_string(),
        }
    }

    /// A file path relative to `base` made absolute (a config file's folder).
    pub fn resolved_against(self, base: &Path) -> Self {
        match self {
            TemplateChoice::File(p) if p.is_relative() => {
                let joined = base.join(&p);
                TemplateChoice::File(std::path::absolute(&joined).unwrap_or(joined))
            }
            other => other,
        }
    }

    /// The chosen template's text (a file is read here), or `None` for the model's own.
    pub fn load(&self) -> Result<Option<TemplateSource>, TextError> {
        match self {
            TemplateChoice::Own => Ok(None),
            TemplateChoice::Named(n) => Ok(Some(TemplateSource::named(*n))),
            TemplateChoice::File(p) => {
                let source = std::fs::read_to_string(p).map_err(|e| TextError::io(p, e))?;
                if source.trim().is_empty() {
                    return Err(TextError::Template {
                        source_name: p.display().to_string(),
                        message: "the file is empty".into(),
                    });
                }
                Ok(Some(TemplateSource {
                    name: p.display().to_string(),
                    named: None,
                    source,
                }))
            }
        }
    }
}

/// The line put before a template's text to make `enable_thinking` default to `on` where
/// the caller does not pass it, so an exported template keeps the run's choice while a
/// caller can still switch it.
pub fn with_thinking_default(source: &str, on: bool) -> String {
    let header = thinking_header(on);
    if source.starts_with(THINKING_HEADER_START) {
        // Replace an earlier default rather than stacking them.
        if let Some(end) = source.find("%}\n") {
            return format!("{header}{}", &source[end + 3..]);
        }
    }
    format!("{header}{source}")
}

/// The thinking default [`with_thinking_default`] put before `source`, if any.
pub fn thinking_default(source: &str) -> Option<bool> {
    if source.starts_with(&thinking_header(true)) {
        Some(true)
    } else if source.starts_with(&thinking_header(false)) {
        Some(false)
    } else {
        None
    }
}

const THINKING_HEADER_START: &str = "{%- set enable_thinking = enable_thinking if";

fn thinking_header(on: bool) -> String {
    format!(
        "{THINKING_HEADER_START} enable_thinking is defined else {} %}}\n",
        if on { "true" } else { "false" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_files_are_the_rest() {
        assert_eq!(TemplateChoice::parse(""), TemplateChoice::Own);
        assert_eq!(TemplateChoice::parse("own"), TemplateChoice::Own);
        assert_eq!(
            TemplateChoice::parse("Llama3"),
            TemplateChoice::Named(NamedTemplate::Llama3)
        );
        assert_eq!(
            TemplateChoice::parse("t/my.jinja"),
            TemplateChoice::File("t/my.jinja".into())
        );
        for t in NamedTemplate::ALL {
            assert_eq!(NamedTemplate::from_name(t.name()), Some(t));
            assert_eq!(NamedTemplate::detect(t.source()), Some(t), "{}", t.name());
        }
    }

    #[test]
    fn a_missing_template_file_is_named() {
        let e = TemplateChoice::File("/nonexistent/t.jinja".into())
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/t.jinja"), "{e}");
    }

    #[test]
    fn the_thinking_default_replaces_an_earlier_one() {
        let once = with_thinking_default("X", false);
        assert_eq!(thinking_default(&once), Some(false));
        assert_eq!(thinking_default("X"), None);
        let twice = with_thinking_default(&once, true);
        assert_eq!(thinking_default(&twice), Some(true));
        assert_eq!(
            twice,
            "{%- set enable_thinking = enable_thinking if enable_thinking is defined else true %}\nX"
        );
    }
}
