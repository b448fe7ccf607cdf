//! The ShareGPT layout (`conversations` of `from`/`value`, roles `human`, `gpt`,
//! `function_call`, `observation`, `system`, plus `system` and `tools` columns), and through
//! its [`Mapping`] tags every other list-of-turns layout, OpenAI messages included.

use serde_json::{Map, Value};

use super::openai::{content_text, content_value};
use super::{type_name, Mapping, Schema};
use crate::data::error::{Problem, ProblemKind};
use crate::data::record::{Conversation, Message, Role};

fn role_from_tag(s: &str, m: &Mapping) -> Option<Role> {
    if s == m.user_tag {
        Some(Role::User)
    } else if s == m.assistant_tag {
        Some(Role::Assistant)
    } else if s == m.observation_tag {
        Some(Role::Tool)
    } else if s == m.function_tag {
        Some(Role::FunctionCall)
    } else if s == m.system_tag {
        Some(Role::System)
    } else {
        Role::parse_any(s)
    }
}

fn tag_for(role: Role, m: &Mapping) -> &str {
    match role {
        Role::System => &m.system_tag,
        Role::User => &m.user_tag,
        Role::Assistant => &m.assistant_tag,
        Role::Tool => &m.observation_tag,
        Role::FunctionCall => &m.function_tag,
    }
}

pub(crate) fn read(
    mut o: Map<String, Value>,
    m: &Mapping,
    problems: &mut Vec<Problem>,
) -> Conversation {
    let mut c = Conversation::default();
    let mut kept = Map::new();
    let mut turn_hints = Vec::new();
    let key = m.messages.clone();
    match o.shift_remove(&key) {
        Some(Value::Array(turns)) => {
            for (i, t) in turns.into_iter().enumerate() {
                let field = |f: &str| Some(format!("{key}[{i}].{f}"));
                let Value::Object(mut t) = t else {
                    problems.push(Problem::new(
                        ProblemKind::WrongType,
                        Some(format!("{key}[{i}]")),
                        format!("a turn must be an object, found {}", type_name(&t)),
                    ));
                    let mut h = Map::new();
                    h.insert("value".into(), t);
                    c.messages.push(Message::new(Role::User, ""));
                    turn_hints.push(Value::Object(h));
                    continue;
                };
                let mut h = Map::new();
                let role = match t.shift_remove(&m.role_tag) {
                    Some(Value::String(r)) => match role_from_tag(&r, m) {
                        Some(role) => {
                            if r != tag_for(role, m) {
                                h.insert("role".into(), Value::String(r));
                            }
                            role
                        }
                        None => {
                            problems.push(Problem::new(
                                ProblemKind::UnknownRole,
                                field(&m.role_tag),
                                format!("unknown role `{r}`"),
                            ));
                            h.insert("role".into(), Value::String(r));
                            guess_role(&c.messages)
                        }
                    },
                    other => {
                        let msg = match &other {
                            None => "missing role".to_string(),
                            Some(v) => format!("expected a role string, found {}", type_name(v)),
                        };
                        problems.push(Problem::new(
                            if other.is_none() {
                                ProblemKind::MissingField
                            } else {
                                ProblemKind::WrongType
                            },
                            field(&m.role_tag),
                            msg,
                        ));
                        h.insert("role".into(), other.unwrap_or(Value::Null));
                        guess_role(&c.messages)
                    }
                };
                let content = match t.shift_remove(&m.content_tag) {
                    Some(Value::String(s)) => s,
                    Some(v) => match content_text(&v) {
                        Some(s) => {
                            h.insert("content".into(), v);
                            s
                        }
                        None => {
                            // OpenAI assistant turns with tool_calls carry `content: null`.
                            if !(v.is_null() && t.contains_key("tool_calls")) {
                                problems.push(Problem::new(
                                    ProblemKind::WrongType,
                                    field(&m.content_tag),
                                    format!("expected text, found {}", type_name(&v)),
                                ));
                            }
                            h.insert("content".into(), v);
                            String::new()
                        }
                    },
                    None => {
                        problems.push(Problem::new(
                            ProblemKind::MissingField,
                            field(&m.content_tag),
                            "missing content",
                        ));
                        h.insert("content_missing".into(), Value::Bool(true));
                        String::new()
                    }
                };
                if !t.is_empty() {
                    h.insert("extra".into(), Value::Object(t));
                }
                c.messages.push(Message::new(role, content));
                turn_hints.push(Value::Object(h));
            }
        }
        Some(other) => {
            problems.push(Problem::new(
                ProblemKind::WrongType,
                Some(key.clone()),
                format!("expected a list of turns, found {}", type_name(&other)),
            ));
            kept.insert(key.clone(), other);
        }
        None => problems.push(Problem::new(
            ProblemKind::MissingField,
            Some(key.clone()),
            format!("missing `{key}`"),
        )),
    }
    // A leading system turn is the system prompt.
    if c.messages.first().is_some_and(|t| t.role == Role::System) && !o.contains_key(&m.system) {
        let t = c.messages.remove(0);
        let h = turn_hints.remove(0);
        c.system = Some(t.content);
        c.set_hint("system_turn", h);
    }
    c.set_hint("turns", Value::Array(turn_hints));

    match o.shift_remove(&m.system) {
        Some(Value::String(s)) => c.system = Some(s),
        Some(Value::Null) | None => {}
        Some(other) => {
            problems.push(Problem::new(
                ProblemKind::WrongType,
                Some(m.system.clone()),
                format!("expected a string, found {}", type_name(&other)),
            ));
            kept.insert(m.system.clone(), other);
        }
    }
    match o.shift_remove(&m.tools) {
        Some(Value::String(s)) => c.tools = Some(s),
        Some(Value::Null) => c.set_hint("tools_null", Value::Bool(true)),
        None => {}
        Some(v) => {
            c.tools = Some(v.to_string());
            c.set_hint("tools_json", Value::Bool(true));
        }
    }
    c.set_unknown_fields(o, kept);
    c
}

/// The role a turn with an unreadable role most likely has: the other side of the previous one.
fn guess_role(prev: &[Message]) -> Role {
    match prev.last().map(|m| m.role) {
        Some(Role::User) | Some(Role::Tool) => Role::Assistant,
        _ => Role::User,
    }
}

fn turn_value(role: Role, content: &str, hint: Option<&Map<String, Value>>, m: &Mapping) -> Value {
    let mut t = Map::new();
    let role_name = hint
        .and_then(|h| h.get("role"))
        .filter(|r| match r {
            Value::String(s) => role_from_tag(s, m).is_none_or(|r| r == role),
            _ => true,
        })
        .cloned()
        .unwrap_or_else(|| Value::String(tag_for(role, m).to_string()));
    t.insert(m.role_tag.clone(), role_name);
    let missing = hint.and_then(|h| h.get("content_missing")).is_some() && content.is_empty();
    if !missing {
        let orig = hint.and_then(|h| h.get("content"));
        let v = match orig {
            Some(o) if content.is_empty() && content_text(o).is_none() => o.clone(),
            _ => content_value(content, orig),
        };
        t.insert(m.content_tag.clone(), v);
    }
    if let Some(Value::Object(extra)) = hint.and_then(|h| h.get("extra")) {
        for (k, v) in extra {
            t.insert(k.clone(), v.clone());
        }
    }
    Value::Object(t)
}

pub(crate) fn write(c: &Conversation, m: &Mapping, schema: Schema) -> Map<String, Value> {
    let mut o = Map::new();
    let mut turns = Vec::with_capacity(c.messages.len() + 1);
    let system_turn = c.hint("system_turn");
    let system_as_turn = schema == Schema::OpenAi || system_turn.is_some();
    if let (Some(s), true) = (&c.system, system_as_turn) {
        turns.push(turn_value(
            Role::System,
            s,
            system_turn.and_then(Value::as_object),
            m,
        ));
    }
    for (i, msg) in c.messages.iter().enumerate() {
        let hint = c.turn_hint(i);
        if let (Some(v), true) = (hint.and_then(|h| h.get("value")), msg.content.is_empty()) {
            turns.push(v.clone());
            continue;
        }
        turns.push(turn_value(msg.role, &msg.content, hint, m));
    }
    o.insert(m.messages.clone(), Value::Array(turns));
    if let (Some(s), false) = (&c.system, system_as_turn) {
        o.insert(m.system.clone(), Value::String(s.clone()));
    }
    match &c.tools {
        Some(t) => {
            let v = if c.hint("tools_json").is_some() {
                serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.clone()))
            } else {
                Value::String(t.clone())
            };
            o.insert(m.tools.clone(), v);
        }
        None if c.hint("tools_null").is_some() => {
            o.insert(m.tools.clone(), Value::Null);
        }
        None => {}
    }
    super::merge_meta(&mut o, c);
    o
}
