//! Chat templates: the model's own Jinja template rendered with minijinja the way
//! transformers' `apply_chat_template` renders it (trim/lstrip blocks, loop controls,
//! Python-style `tojson`, `raise_exception`, `strftime_now`, Python string methods), and
//! the assistant spans that training masks the loss with.

use std::ops::Range;

use minijinja::value::{Kwargs, Value as JValue};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::TextError;

/// One chat turn as templates see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template plus the special tokens it may refer to.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source_name: String,
    source: String,
    bos_token: String,
    eos_token: String,
    extra: serde_json::Map<String, Value>,
    /// Text at which a reply stops (a named template's next-turn marker).
    stop_strings: Vec<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_name", &self.source_name)
            .finish()
    }
}

const TEMPLATE_NAME: &str = "chat";

/// Python's `json.dumps(x, ensure_ascii=False)` separators: `", "` and `": "`.
struct PythonJsonFormatter;

impl serde_json::ser::Formatter for PythonJsonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`, without HTML escaping.
fn tojson(value: JValue, kwargs: Kwargs) -> Result<JValue, minijinja::Error> {
    let indent: Option<JValue> = kwargs.get("indent")?;
    let sort: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<JValue> = kwargs.get("ensure_ascii")?;
    let _: Option<JValue> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let mut json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    if sort.unwrap_or(false) {
        json = sort_keys(json);
    }
    let mut out = Vec::new();
    let write_err = |e: serde_json::Error| {
        minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}"))
    };
    match indent.filter(|i| !i.is_none() && !i.is_undefined()) {
        Some(i) => {
            let pad = match i.as_i64() {
                Some(n) => " ".repeat(n.max(0) as usize),
                None => i.as_str().unwrap_or("").to_string(),
            };
            let fmt = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(&json, &mut ser).map_err(write_err)?;
        }
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonJsonFormatter);
            serde::Serialize::serialize(&json, &mut ser).map_err(write_err)?;
        }
    }
    let s = String::from_utf8(out)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(JValue::from_safe_string(s))
}

fn raise_exception(message: String) -> Result<JValue, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> Result<JValue, minijinja::Error> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: bad format `{format}`"),
        )
    })?;
    Ok(JValue::from(out))
}

impl ChatTemplate {
    /// Compiles `source`. `source_name` names the template in errors (a file path).
    pub fn new(
        source: &str,
        source_name: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self, TextError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        // minijinja has no custom tags; `{% generation %}` only marks assistant text for
        // transformers' mask, which `render_with_assistant_spans` computes another way.
        let cleaned = strip_generation_tags(source);
        env.add_template_owned(TEMPLATE_NAME, cleaned)
            .map_err(|e| TextError::Template {
                source_name: source_name.to_string(),
                message: format!("cannot parse: {e:#}"),
            })?;
        Ok(Self {
            env,
            source_name: source_name.to_string(),
            source: source.to_string(),
            bos_token: bos_token.unwrap_or_default().to_string(),
            eos_token: eos_token.unwrap_or_default().to_string(),
            extra: serde_json::Map::new(),
            stop_strings: Vec::new(),
        })
    }

    /// The template text as the model ships it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template comes from (a file, or which built-in one), for messages.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Text at which a reply stops, beyond the model's stop tokens.
    pub fn stop_strings(&self) -> &[String] {
        &self.stop_strings
    }

    pub fn set_stop_strings(&mut self, stops: Vec<String>) {
        self.stop_strings = stops;
    }

    /// Whether the template reads `enable_thinking` (Qwen3's thinking switch).
    pub fn has_thinking_switch(&self) -> bool {
        super::named_template::references_thinking(&self.source)
    }

    /// Adds a variable every render sees (e.g. `pad_token`).
    pub fn set_variable(&mut self, name: &str, value: Value) {
        self.extra.insert(name.to_string(), value);
    }

    /// Renders `messages` (objects with at least `role` and `content`) like
    /// `apply_chat_template(messages, tools=tools, add_generation_prompt=..., tokenize=False)`.
    pub fn render_json(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        let mut ctx = self.extra.clone();
        ctx.insert("messages".into(), Value::Array(messages.to_vec()));
        ctx.insert("tools".into(), tools.cloned().unwrap_or(Value::Null));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::Bool(add_generation_prompt),
        );
        ctx.insert("bos_token".into(), Value::String(self.bos_token.clone()));
        ctx.insert("eos_token".into(), Value::String(self.eos_token.clone()));
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| self.error(e))?;
        tmpl.render(Value::Object(ctx)).map_err(|e| self.error(e))
    }

    /// Renders plain role/content messages.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
            .collect();
        self.render_json(&msgs, None, add_generation_prompt)
    }

    /// Renders the whole conversation and returns the byte ranges of the text each
    /// assistant turn contributes (its content and end-of-turn marker), which is what
    /// trains by default. Each span is found by rendering the conversation up to that
    /// turn with the generation prompt (start) and up to and including it (end).
    pub fn render_with_assistant_spans(
        &self,
        messages: &[ChatMessage],
    ) -> Result<(String, Vec<Range<usize>>), TextError> {
        let full = self.render(messages, false)?;
        let mut spans = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let start_text = self.render(&messages[..i], true)?;
            let end_text = self.render(&messages[..=i], false)?;
            if !full.starts_with(&start_text)
                || !full.starts_with(&end_text)
                || end_text.len() < start_text.len()
            {
                return Err(TextError::Template {
                    source_name: self.source_name.clone(),
                    message: format!(
                        "rendering the conversation up to turn {i} is not a prefix of the whole rendering, so the assistant tokens cannot be located"
                    ),
                });
            }
            spans.push(start_text.len()..end_text.len());
        }
        Ok((full, spans))
    }

    fn error(&self, e: minijinja::Error) -> TextError {
        let message = if e.kind() == ErrorKind::InvalidOperation {
            e.detail()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{e:#}"))
        } else {
            format!("{e:#}")
        };
        TextError::Template {
            source_name: self.source_name.clone(),
            message,
        }
    }
}

/// Removes `{% generation %}` / `{% endgeneration %}` (with any whitespace-control dashes).
fn strip_generation_tags(source: &str) -> String {
    let re = regex::Regex::new(r"\{%-?\s*(end)?generation\s*-?%\}");
    match re {
        Ok(re) => re.replace_all(source, "").into_owned(),
        Err(_) => source.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_smollm2_template() {
        let t = ChatTemplate::new(SMOL, "smol", None, None).unwrap();
        let out = t.render(&[ChatMessage::new("user", "Hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn assistant_spans_cover_replies_and_end_marker() {
        let t = ChatTemplate::new(SMOL, "smol", None, None).unwrap();
        let msgs = [
            ChatMessage::new("user", "a"),
            ChatMessage::new("assistant", "b"),
            ChatMessage::new("user", "c"),
            ChatMessage::new("assistant", "d"),
        ];
        let (text, spans) = t.render_with_assistant_spans(&msgs).unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(&text[spans[0].clone()], "b<|im_end|>\n");
        assert_eq!(&text[spans[1].clone()], "d<|im_end|>\n");
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let src = "{{ tools | tojson }}|{{ tools | tojson(indent=2) }}";
        let t = ChatTemplate::new(src, "t", None, None).unwrap();
        let tools = serde_json::json!([{"name": "f", "d": "<a & b> é"}]);
        let out = t.render_json(&[], Some(&tools), false).unwrap();
        assert_eq!(
            out,
            "[{\"name\": \"f\", \"d\": \"<a & b> é\"}]|[\n  {\n    \"name\": \"f\",\n    \"d\": \"<a & b> é\"\n  }\n]"
        );
    }

    #[test]
    fn raise_exception_and_parse_errors_name_the_template() {
        let t = ChatTemplate::new(
            "{{ raise_exception('roles must alternate') }}",
            "m/tokenizer_config.json",
            None,
            None,
        )
        .unwrap();
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(
            e.contains("roles must alternate") && e.contains("m/tokenizer_config.json"),
            "{e}"
        );
        let e = ChatTemplate::new("{% for %}", "bad.jinja", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.jinja") && e.contains("cannot parse"), "{e}");
    }

    #[test]
    fn python_methods_loop_controls_and_generation_tags() {
        let src = "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}{% generation %}{{ m.content.strip().upper() }}{% endgeneration %}{% endfor %}";
        let t = ChatTemplate::new(src, "t", None, None).unwrap();
        let out = t
            .render(
                &[
                    ChatMessage::new("system", "s"),
                    ChatMessage::new("user", "  hi "),
                ],
                false,
            )
            .unwrap();
        assert_eq!(out, "HI");
    }
}
