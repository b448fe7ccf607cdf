//! A model with a chosen chat template in place of its own: the named templates and
//! template files of `crate::text::named_template`, checked against the model's tokenizer
//! (a template whose special tokens the tokenizer lacks is refused, naming both), with
//! the thinking switch's default set and the stop tokens of the new markup. Training,
//! scoring, eval suites, chat, batch compare and exports all take the templated model, so
//! one template serves them all.

use super::{ChatTemplate, Model, ModelError};
use crate::text::named_template::{self, END_OF_TURN_MARKERS};
use crate::text::{TemplateSource, TextError};

/// A model with its template replaced, and what the replacement warns about.
pub struct Templated {
    pub model: Model,
    pub warnings: Vec<String>,
}

impl Model {
    /// Whether `token` is one token of the tokenizer, as encoding it gives it.
    pub fn is_single_token(&self, token: &str) -> bool {
        match self.tokenizer.token_to_id(token) {
            Some(id) => self
                .tokenizer
                .encode(token, false)
                .is_ok_and(|ids| ids == [id]),
            None => false,
        }
    }

    /// Why `chosen` differs from the model's own template, when it does and the model came
    /// with one (a model that ships none has nothing to differ from).
    pub fn template_differs(&self, chosen: &TemplateSource) -> Option<String> {
        (self.own_template && chosen.source.trim() != self.template.source().trim()).then(|| {
            format!(
                "template {} is not the model's own ({}): the tuned model answers in {}'s format, and its exports carry it",
                chosen.name,
                self.template.source_name(),
                chosen.name
            )
        })
    }

    /// This model with `chosen` as its chat template (`None`: its own) and, where the
    /// template has the switch, `enable_thinking` defaulting to `thinking`. A clone: the
    /// weights are shared.
    pub fn with_template(
        &self,
        chosen: Option<&TemplateSource>,
        thinking: Option<bool>,
    ) -> Result<Templated, ModelError> {
        let mut warnings = Vec::new();
        if chosen.is_none() && thinking.is_none() {
            return Ok(Templated {
                model: self.clone(),
                warnings,
            });
        }
        let (source, name, named) = match chosen {
            Some(t) => (t.source.clone(), t.name.clone(), t.named),
            None => (
                self.template.source().to_string(),
                self.template.source_name().to_string(),
                None,
            ),
        };
        let refuse = |message: String| -> ModelError {
            TextError::Template {
                source_name: name.clone(),
                message,
            }
            .into()
        };
        if let Some(n) = named {
            for tok in n.required_tokens() {
                if !self.is_single_token(tok) {
                    return Err(refuse(format!(
                        "needs the special token `{tok}`, which the tokenizer of {} does not have; choose the model's own template, one built on its tokens, or alpaca or plain (they end replies with the model's EOS token)",
                        self.name
                    )));
                }
            }
            if n.ends_with_eos() && self.eos_id().is_none() {
                return Err(refuse(format!(
                    "ends replies with the EOS token, and the tokenizer of {} has none",
                    self.name
                )));
            }
        } else if chosen.is_some() {
            for marker in END_OF_TURN_MARKERS {
                if source.contains(marker) && !self.is_single_token(marker) {
                    warnings.push(format!(
                        "template {name} writes `{marker}`, which the tokenizer of {} does not hold as one token: it is trained and generated as plain text, and replies do not stop at it",
                        self.name
                    ));
                }
            }
        }
        if let Some(t) = chosen {
            warnings.extend(self.template_differs(t));
        }
        let source = match thinking {
            Some(on) if named_template::references_thinking(&source) => {
                named_template::with_thinking_default(&source, on)
            }
            Some(_) => {
                warnings.push(format!(
                    "template {name} has no thinking switch (it never reads enable_thinking), so the thinking setting changes nothing"
                ));
                source
            }
            None => source,
        };
        let mut template = ChatTemplate::new(
            &source,
            &name,
            self.tokenizer.bos_token.as_deref(),
            self.tokenizer.eos_token.as_deref(),
        )?;
        template.set_stop_strings(
            named
                .map(|n| n.stop_strings().iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
        );
        let mut stops = self.stop_token_ids.clone();
        stops.extend(self.eos_id());
        for marker in END_OF_TURN_MARKERS {
            if source.contains(marker) && self.is_single_token(marker) {
                stops.extend(self.tokenizer.token_to_id(marker));
            }
        }
        stops.sort_unstable();
        stops.dedup();
        let mut model = self.clone();
        if let Some(o) = model.tokenizer_config.as_object_mut() {
            o.insert("chat_template".into(), source.clone().into());
        }
        model.template = template;
        model.stop_token_ids = stops;
        Ok(Templated { model, warnings })
    }

    fn eos_id(&self) -> Option<u32> {
        self.tokenizer
            .eos_token
            .as_deref()
            .and_then(|t| self.tokenizer.token_to_id(t))
    }

    /// The `tokenizer_config.json` that goes with this model's exports and adapters: the
    /// model's own, with the chat template it uses now.
    pub fn tokenizer_config_with_template(&self) -> serde_json::Value {
        let mut cfg = self.tokenizer_config.clone();
        if !cfg.is_object() {
            cfg = serde_json::json!({});
        }
        if let Some(o) = cfg.as_object_mut() {
            o.insert("chat_template".into(), self.template.source().into());
            o.entry("tokenizer_class")
                .or_insert("PreTrainedTokenizerFast".into());
        }
        cfg
    }
}
