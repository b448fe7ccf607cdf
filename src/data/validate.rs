//! Checks of a record's content: turns present and non-empty, turns alternating between the
//! prompt side (user, tool result) and the trained side (assistant, tool call) as
//! LLaMA-Factory requires, and a final trained turn. Format-level problems (invalid JSON,
//! wrong types, unknown roles, non-UTF-8 text) are found by the readers.

use crate::data::error::{Problem, ProblemKind};
use crate::data::formats::{Mapping, Schema};
use crate::data::record::{Conversation, Role};

/// The name of turn `i`'s content field in the record's own layout.
fn turn_field(c: &Conversation, i: usize, schema: Schema, m: &Mapping) -> String {
    let n = c.messages.len();
    if schema == Schema::Alpaca {
        let last_user = if n.is_multiple_of(2) {
            n.saturating_sub(2)
        } else {
            n - 1
        };
        return if i == last_user {
            m.prompt.clone()
        } else if i == last_user + 1 {
            m.response.clone()
        } else {
            format!("{}[{}][{}]", m.history, i / 2, i % 2)
        };
    }
    let offset = usize::from(
        c.hint("system_turn").is_some() || (schema == Schema::OpenAi && c.system.is_some()),
    );
    format!("{}[{}].{}", m.messages, i + offset, m.content_tag)
}

/// Problems with the content of one record.
pub fn check(c: &Conversation, schema: Schema, m: &Mapping) -> Vec<Problem> {
    let mut out = Vec::new();
    if c.hint("raw").is_some() && c.messages.is_empty() {
        return out; // Already reported as invalid JSON.
    }
    if c.messages.is_empty() {
        out.push(Problem::new(
            ProblemKind::MissingField,
            Some(match schema {
                Schema::Alpaca => m.prompt.clone(),
                _ => m.messages.clone(),
            }),
            "the record has no turns",
        ));
        return out;
    }
    let mut side = 0usize; // position among non-system turns
    for (i, msg) in c.messages.iter().enumerate() {
        if msg.content.trim().is_empty() && msg.role != Role::System {
            let what = match (schema, msg.role) {
                (Schema::Alpaca, Role::User) => "empty instruction",
                (Schema::Alpaca, _) => "empty output",
                _ => "empty turn",
            };
            out.push(Problem::new(
                ProblemKind::EmptyField,
                Some(turn_field(c, i, schema, m)),
                what,
            ));
        }
        if msg.role == Role::System {
            continue;
        }
        let prompt_side = side.is_multiple_of(2);
        let ok = if prompt_side {
            matches!(msg.role, Role::User | Role::Tool)
        } else {
            msg.role.is_trained()
        };
        if !ok {
            let want = if prompt_side {
                "user or tool result"
            } else {
                "assistant or tool call"
            };
            out.push(Problem::new(
                ProblemKind::NotAlternating,
                Some(turn_field(c, i, schema, m)),
                format!("turn {i} is `{}` where a {want} turn belongs", msg.role),
            ));
        }
        side += 1;
    }
    match c.messages.iter().rev().find(|m| m.role != Role::System) {
        Some(last) if last.role.is_trained() => {}
        Some(last) => out.push(Problem::new(
            ProblemKind::NoFinalAssistant,
            None,
            format!(
                "the conversation ends with a `{}` turn, not an assistant turn",
                last.role
            ),
        )),
        None => out.push(Problem::new(
            ProblemKind::NoFinalAssistant,
            None,
            "the conversation has only system turns",
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::record::Message;

    fn conv(roles: &[(Role, &str)]) -> Conversation {
        Conversation {
            messages: roles.iter().map(|(r, c)| Message::new(*r, *c)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn flags_alternation_and_ending() {
        let m = Mapping::default_for(Schema::ShareGpt);
        let ok = conv(&[
            (Role::User, "a"),
            (Role::FunctionCall, "f"),
            (Role::Tool, "r"),
            (Role::Assistant, "b"),
        ]);
        assert!(check(&ok, Schema::ShareGpt, &m).is_empty());
        let bad = conv(&[(Role::User, "a"), (Role::User, "b")]);
        let ps = check(&bad, Schema::ShareGpt, &m);
        assert!(ps.iter().any(|p| p.kind == ProblemKind::NotAlternating));
        assert!(ps.iter().any(|p| p.kind == ProblemKind::NoFinalAssistant));
        assert_eq!(ps[0].field.as_deref(), Some("conversations[1].value"));
    }

    #[test]
    fn alpaca_fields_are_named() {
        let m = Mapping::default_for(Schema::Alpaca);
        let c = conv(&[(Role::User, ""), (Role::Assistant, " ")]);
        let ps = check(&c, Schema::Alpaca, &m);
        let fields: Vec<_> = ps
            .iter()
            .map(|p| p.field.clone().unwrap_or_default())
            .collect();
        assert_eq!(fields, vec!["instruction", "output"]);
    }
}
