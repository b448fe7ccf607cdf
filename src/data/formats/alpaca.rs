//! The Alpaca layout: `instruction` (+ `input`, joined with a newline as LLaMA-Factory does)
//! is the user turn, `output` the assistant turn, `history` a list of earlier
//! `[instruction, output]` pairs, `system` the system prompt.

use serde_json::{Map, Value};

use super::{type_name, Mapping};
use crate::data::error::{Problem, ProblemKind};
use crate::data::record::{Conversation, Message, Role};

/// Takes a string field out of the record. A field of another type is kept in `meta` under
/// its key (so it is written back) and reported.
fn take_str(
    o: &mut Map<String, Value>,
    key: &str,
    meta: &mut Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    match o.shift_remove(key)? {
        Value::String(s) => Some(s),
        Value::Null => None,
        other => {
            problems.push(Problem::new(
                ProblemKind::WrongType,
                Some(key.to_string()),
                format!("expected a string, found {}", type_name(&other)),
            ));
            meta.insert(key.to_string(), other);
            None
        }
    }
}

pub(crate) fn read(
    mut o: Map<String, Value>,
    m: &Mapping,
    problems: &mut Vec<Problem>,
) -> Conversation {
    let mut c = Conversation::default();
    let mut meta = Map::new();
    let had_prompt = o.contains_key(&m.prompt);
    let had_response = o.contains_key(&m.response);
    let instruction = take_str(&mut o, &m.prompt, &mut meta, problems);
    let input_present = o.get(&m.query).is_some_and(Value::is_string);
    let input = take_str(&mut o, &m.query, &mut meta, problems);
    let output = take_str(&mut o, &m.response, &mut meta, problems);
    c.system = take_str(&mut o, &m.system, &mut meta, problems);
    c.tools = take_str(&mut o, &m.tools, &mut meta, problems);

    let mut turn_hints = Vec::new();
    let mut history_ok = true;
    match o.shift_remove(&m.history) {
        None => {}
        Some(Value::Null) => c.set_hint("history_null", Value::Bool(true)),
        Some(Value::Array(pairs)) => {
            let valid = pairs.iter().all(|p| {
                p.as_array()
                    .is_some_and(|a| a.len() == 2 && a.iter().all(Value::is_string))
            });
            if valid {
                c.set_hint("history", Value::Bool(true));
                for p in pairs {
                    if let Value::Array(a) = p {
                        for (j, s) in a.into_iter().enumerate() {
                            let role = if j == 0 { Role::User } else { Role::Assistant };
                            if let Value::String(s) = s {
                                c.messages.push(Message::new(role, s));
                                turn_hints.push(Value::Object(Map::new()));
                            }
                        }
                    }
                }
            } else {
                history_ok = false;
                problems.push(Problem::new(
                    ProblemKind::WrongType,
                    Some(m.history.clone()),
                    "expected a list of [instruction, output] pairs of strings",
                ));
                meta.insert(m.history.clone(), Value::Array(pairs));
            }
        }
        Some(other) => {
            history_ok = false;
            problems.push(Problem::new(
                ProblemKind::WrongType,
                Some(m.history.clone()),
                format!("expected a list of pairs, found {}", type_name(&other)),
            ));
            meta.insert(m.history.clone(), other);
        }
    }
    let _ = history_ok;

    if !had_prompt {
        problems.push(Problem::new(
            ProblemKind::MissingField,
            Some(m.prompt.clone()),
            "missing instruction",
        ));
    }
    if !had_response {
        problems.push(Problem::new(
            ProblemKind::MissingField,
            Some(m.response.clone()),
            "missing output",
        ));
    }
    let instruction = instruction.unwrap_or_default();
    let mut user_hint = Map::new();
    let content = match &input {
        Some(i) if !i.is_empty() => {
            if instruction.is_empty() {
                user_hint.insert("input_only".into(), Value::Bool(true));
                i.clone()
            } else {
                format!("{instruction}\n{i}")
            }
        }
        _ => instruction,
    };
    // The writer always writes `input` (LLaMA-Factory's files have it); only a non-empty
    // input or a missing key needs remembering, which keeps plain records free of hints.
    match input {
        Some(i) if !i.is_empty() => {
            user_hint.insert("input".into(), Value::String(i));
        }
        _ if !input_present => {
            user_hint.insert("no_input".into(), Value::Bool(true));
        }
        _ => {}
    }
    c.messages.push(Message::new(Role::User, content));
    turn_hints.push(Value::Object(user_hint));
    c.messages
        .push(Message::new(Role::Assistant, output.unwrap_or_default()));
    turn_hints.push(Value::Object(Map::new()));
    c.set_hint("turns", Value::Array(turn_hints));

    // Everything else, in source order, then the fields kept because of a wrong type.
    c.set_unknown_fields(o, meta);
    c
}

/// Whether a conversation fits the Alpaca layout, and why not.
pub fn expressible(c: &Conversation) -> Result<(), String> {
    for (i, msg) in c.messages.iter().enumerate() {
        let want = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        if msg.role != want {
            return Err(format!(
                "turn {i} is `{}`; Alpaca holds only alternating user/assistant turns",
                msg.role
            ));
        }
    }
    Ok(())
}

pub(crate) fn write(c: &Conversation, m: &Mapping) -> Result<Map<String, Value>, String> {
    expressible(c)?;
    let n = c.messages.len();
    // The last user turn (and its answer, if any) is the instruction/output pair.
    let (last_user, last_asst) = if n == 0 {
        (None, None)
    } else if n.is_multiple_of(2) {
        (Some(n - 2), Some(n - 1))
    } else {
        (Some(n - 1), None)
    };
    let hist_end = last_user.unwrap_or(0);
    let mut o = Map::new();
    let user = last_user
        .map(|i| c.messages[i].content.as_str())
        .unwrap_or("");
    let hint = last_user.and_then(|i| c.turn_hint(i));
    let hint_input = hint.and_then(|h| h.get("input")).and_then(Value::as_str);
    let input_only = hint
        .and_then(|h| h.get("input_only"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let no_input = hint.and_then(|h| h.get("no_input")).is_some();
    let (instruction, input) = match hint_input {
        Some(inp) if input_only && user == inp => ("", Some(inp)),
        Some(inp) if !inp.is_empty() => match user.strip_suffix(inp) {
            Some(head) if head.ends_with('\n') => (&head[..head.len() - 1], Some(inp)),
            _ => (user, Some("")),
        },
        _ if no_input => (user, None),
        _ => (user, Some("")),
    };
    o.insert(m.prompt.clone(), Value::String(instruction.into()));
    if let Some(inp) = input {
        o.insert(m.query.clone(), Value::String(inp.into()));
    }
    let output = last_asst
        .map(|i| c.messages[i].content.as_str())
        .unwrap_or("");
    o.insert(m.response.clone(), Value::String(output.into()));
    if let Some(s) = &c.system {
        o.insert(m.system.clone(), Value::String(s.clone()));
    }
    if let Some(t) = &c.tools {
        o.insert(m.tools.clone(), Value::String(t.clone()));
    }
    if hist_end > 0 || c.hint("history").is_some() {
        let pairs = c.messages[..hist_end]
            .chunks(2)
            .map(|p| {
                Value::Array(
                    p.iter()
                        .map(|msg| Value::String(msg.content.clone()))
                        .collect(),
                )
            })
            .collect();
        o.insert(m.history.clone(), Value::Array(pairs));
    } else if c.hint("history_null").is_some() {
        o.insert(m.history.clone(), Value::Null);
    }
    super::merge_meta(&mut o, c);
    Ok(o)
}
