//! The normalized record: one conversation with an optional system prompt, its turns, an
//! optional tool description and every field of the source record the studio does not
//! interpret (`meta`). Also the per-turn bookkeeping that lets a record be written back
//! exactly as it was read.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Key in [`Conversation::meta`] under which readers keep what they need to write a record
/// back unchanged (unknown keys of each turn, the original spelling of a role, whether the
/// system prompt was a turn, ...). Writers never emit it. It is an object:
/// `{"turns": [ {..per turn..}, ... ], ...}`; `turns` is aligned with `messages` and is
/// ignored when its length no longer matches (the turn-editing methods below keep it aligned).
pub const HINTS_KEY: &str = "__finetune_studio";

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result (ShareGPT `observation`, OpenAI `tool`).
    Tool,
    /// The assistant calling a tool (ShareGPT `function_call`); trained like an assistant turn.
    FunctionCall,
}

impl Role {
    /// The role name that Hugging Face chat templates expect. A function call is spoken by the
    /// assistant, so it maps to `"assistant"`; use [`Role::label`] to tell them apart.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant | Role::FunctionCall => "assistant",
            Role::Tool => "tool",
        }
    }

    /// A distinct name for every variant (for display, statistics and the recovery file).
    pub fn label(self) -> &'static str {
        match self {
            Role::FunctionCall => "function_call",
            r => r.as_str(),
        }
    }

    /// Whether the model learns this turn (assistant text and tool calls).
    pub fn is_trained(self) -> bool {
        matches!(self, Role::Assistant | Role::FunctionCall)
    }

    /// Parses the names used by OpenAI, ShareGPT and LLaMA-Factory (`human`, `gpt`, `observation`, ...).
    pub fn parse_any(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "user" | "human" => Role::User,
            "assistant" | "gpt" | "bot" | "model" | "chatgpt" => Role::Assistant,
            "tool" | "observation" | "function" | "ipython" => Role::Tool,
            "function_call" => Role::FunctionCall,
            _ => return None,
        })
    }

    pub const ALL: [Role; 5] = [
        Role::System,
        Role::User,
        Role::Assistant,
        Role::Tool,
        Role::FunctionCall,
    ];
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// One training record.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Conversation {
    pub system: Option<String>,
    pub messages: Vec<Message>,
    /// Tool description (JSON text, as ShareGPT's `tools` column holds it).
    pub tools: Option<String>,
    /// Every field of the source record the studio does not interpret, in source order.
    pub meta: Map<String, Value>,
}

impl Conversation {
    /// `(role, content)` pairs in chat-template order: the system prompt first when present.
    pub fn to_chat_messages(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::with_capacity(self.messages.len() + 1);
        if let Some(s) = &self.system {
            out.push(("system", s.as_str()));
        }
        out.extend(
            self.messages
                .iter()
                .map(|m| (m.role.as_str(), m.content.as_str())),
        );
        out
    }

    /// Every piece of text of the record (system, turns, tools), for search and placeholders.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.system
            .iter()
            .map(String::as_str)
            .chain(self.messages.iter().map(|m| m.content.as_str()))
            .chain(self.tools.iter().map(String::as_str))
    }

    /// Replaces every `from` with `to` in the system prompt, the turns and the tools.
    /// Returns whether anything changed.
    pub fn replace_text(&mut self, map: &[(String, String)]) -> bool {
        let mut changed = false;
        let mut fix = |s: &mut String| {
            for (from, to) in map {
                if !from.is_empty() && s.contains(from.as_str()) {
                    *s = s.replace(from.as_str(), to);
                    changed = true;
                }
            }
        };
        if let Some(s) = &mut self.system {
            fix(s);
        }
        for m in &mut self.messages {
            fix(&mut m.content);
        }
        if let Some(s) = &mut self.tools {
            fix(s);
        }
        changed
    }

    /// The meta fields without the studio's own bookkeeping.
    pub fn user_meta(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.meta.iter().filter(|(k, _)| k.as_str() != HINTS_KEY)
    }

    /// Inserts a turn at `at` (clamped to the end), keeping the per-turn hints aligned.
    pub fn insert_turn(&mut self, at: usize, message: Message) {
        let at = at.min(self.messages.len());
        let aligned = self.turn_hints_aligned();
        self.messages.insert(at, message);
        if let (true, Some(turns)) = (aligned, self.turn_hints_mut()) {
            turns.insert(at, Value::Object(Map::new()));
        }
    }

    /// Removes the turn at `at`, keeping the per-turn hints aligned.
    pub fn remove_turn(&mut self, at: usize) -> Option<Message> {
        if at >= self.messages.len() {
            return None;
        }
        let aligned = self.turn_hints_aligned();
        let m = self.messages.remove(at);
        if let (true, Some(turns)) = (aligned, self.turn_hints_mut()) {
            turns.remove(at);
        }
        Some(m)
    }

    /// Moves the turn at `from` to position `to`, keeping the per-turn hints aligned.
    pub fn move_turn(&mut self, from: usize, to: usize) -> bool {
        let n = self.messages.len();
        if from >= n || to >= n {
            return false;
        }
        let aligned = self.turn_hints_aligned();
        let m = self.messages.remove(from);
        self.messages.insert(to, m);
        if let (true, Some(turns)) = (aligned, self.turn_hints_mut()) {
            let h = turns.remove(from);
            turns.insert(to, h);
        }
        true
    }

    // ---- hints (crate-internal bookkeeping for lossless writing) ----

    pub(crate) fn hints(&self) -> Option<&Map<String, Value>> {
        self.meta.get(HINTS_KEY).and_then(Value::as_object)
    }

    pub(crate) fn hint(&self, key: &str) -> Option<&Value> {
        self.hints().and_then(|h| h.get(key))
    }

    /// Sets `meta` to the source record's remaining fields (in source order), then the
    /// fields kept because they had the wrong type, keeping the studio's hints last.
    pub(crate) fn set_unknown_fields(
        &mut self,
        rest: Map<String, Value>,
        kept: Map<String, Value>,
    ) {
        let hints = self.meta.shift_remove(HINTS_KEY);
        // A fresh map: the source object's table would keep its capacity for every record.
        self.meta = if rest.is_empty() {
            Map::new()
        } else {
            rest.into_iter().collect()
        };
        for (k, v) in kept {
            self.meta.insert(k, v);
        }
        if let Some(h) = hints {
            self.meta.insert(HINTS_KEY.into(), h);
        }
    }

    pub(crate) fn set_hint(&mut self, key: &str, value: Value) {
        let entry = self
            .meta
            .entry(HINTS_KEY.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        if let Value::Object(m) = entry {
            m.insert(key.to_string(), value);
        }
    }

    /// The hints of turn `i`, if the hint list is aligned with the turns.
    pub(crate) fn turn_hint(&self, i: usize) -> Option<&Map<String, Value>> {
        let turns = self.hint("turns")?.as_array()?;
        if turns.len() != self.messages.len() {
            return None;
        }
        turns.get(i)?.as_object()
    }

    fn turn_hints_aligned(&self) -> bool {
        self.hint("turns")
            .and_then(Value::as_array)
            .is_some_and(|t| t.len() == self.messages.len())
    }

    fn turn_hints_mut(&mut self) -> Option<&mut Vec<Value>> {
        self.meta
            .get_mut(HINTS_KEY)?
            .as_object_mut()?
            .get_mut("turns")?
            .as_array_mut()
    }

    /// Drops hints that carry nothing and sizes the record's maps, lists and texts to
    /// their contents (keeps records from readers lean).
    pub(crate) fn tidy_hints(&mut self) {
        let empty = match self.meta.get_mut(HINTS_KEY) {
            Some(Value::Object(h)) => {
                if let Some(Value::Array(turns)) = h.get("turns") {
                    if turns
                        .iter()
                        .all(|t| t.as_object().is_some_and(|o| o.is_empty()))
                    {
                        h.remove("turns");
                    }
                }
                h.is_empty()
            }
            Some(_) => true,
            None => false,
        };
        if empty {
            self.meta.shift_remove(HINTS_KEY);
        }
        // Release the room that maps and lists grown one insertion at a time keep (over
        // 100K records with hints, a third of the records' memory).
        self.meta = compact_map(std::mem::take(&mut self.meta));
        self.messages.shrink_to_fit();
        for m in &mut self.messages {
            m.content.shrink_to_fit();
        }
    }
}

/// A map rebuilt with its tables, and those of every value inside, sized to their contents
/// (order kept).
fn compact_map(m: Map<String, Value>) -> Map<String, Value> {
    if m.is_empty() {
        return Map::new();
    }
    m.into_iter().map(|(k, v)| (k, compact(v))).collect()
}

fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(compact_map(m)),
        Value::Array(a) => {
            let mut a: Vec<Value> = a.into_iter().map(compact).collect();
            a.shrink_to_fit();
            Value::Array(a)
        }
        Value::String(mut s) => {
            s.shrink_to_fit();
            Value::String(s)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_messages_put_system_first() {
        let c = Conversation {
            system: Some("be brief".into()),
            messages: vec![
                Message::new(Role::User, "hi"),
                Message::new(Role::FunctionCall, "{}"),
                Message::new(Role::Tool, "42"),
                Message::new(Role::Assistant, "ok"),
            ],
            ..Default::default()
        };
        let m = c.to_chat_messages();
        assert_eq!(m[0], ("system", "be brief"));
        assert_eq!(m[2], ("assistant", "{}"));
        assert_eq!(m[3], ("tool", "42"));
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn turn_edits_keep_hints_aligned() {
        let mut c = Conversation {
            messages: vec![
                Message::new(Role::User, "a"),
                Message::new(Role::Assistant, "b"),
            ],
            ..Default::default()
        };
        c.set_hint(
            "turns",
            serde_json::json!([{"extra": {"x": 1}}, {"extra": {"x": 2}}]),
        );
        c.move_turn(0, 1);
        assert_eq!(c.turn_hint(0).unwrap()["extra"]["x"], 2);
        c.insert_turn(0, Message::new(Role::System, "s"));
        assert!(c.turn_hint(0).unwrap().is_empty());
        c.remove_turn(0);
        assert_eq!(c.turn_hint(1).unwrap()["extra"]["x"], 1);
    }
}
