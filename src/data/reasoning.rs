//! Reasoning blocks in trained turns: the `<think>…</think>` text that thinking models
//! (Qwen3, DeepSeek-R1 distills) write before their answer. The Datasets tab counts the
//! records that have them; a run with `strip_reasoning` removes them before tokenizing.

use super::Conversation;

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Whether `text` holds a reasoning block (a `</think>`; the opening tag may sit in the
/// prompt, as Qwen3's generation prompt writes it).
pub fn has_reasoning(text: &str) -> bool {
    text.contains(CLOSE)
}

/// Whether any trained turn (assistant, tool call) of the record has a reasoning block.
pub fn record_has_reasoning(c: &Conversation) -> bool {
    c.messages
        .iter()
        .any(|m| m.role.is_trained() && has_reasoning(&m.content))
}

/// How many records have a reasoning block in a trained turn.
pub fn count_records_with_reasoning(records: &[Conversation]) -> usize {
    records.iter().filter(|c| record_has_reasoning(c)).count()
}

/// `text` without its reasoning blocks: each `<think>…</think>` (or, with no opening tag
/// before it, everything up to a `</think>`) is removed with the whitespace after it.
pub fn strip_reasoning(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(close) = rest.find(CLOSE) {
        let before = &rest[..close];
        if let Some(open) = before.find(OPEN) {
            out.push_str(&before[..open]);
        }
        rest = rest[close + CLOSE.len()..].trim_start();
    }
    out.push_str(rest);
    out
}

/// Removes the reasoning blocks of every trained turn. Returns whether anything changed.
pub fn strip_record(c: &mut Conversation) -> bool {
    strip_messages(&mut c.messages)
}

/// Removes the reasoning blocks of the trained turns among `messages` (a record's turns,
/// a preference pair's replies). Returns whether anything changed.
pub fn strip_messages(messages: &mut [super::Message]) -> bool {
    let mut changed = false;
    for m in messages.iter_mut().filter(|m| m.role.is_trained()) {
        if has_reasoning(&m.content) {
            m.content = strip_reasoning(&m.content);
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_the_space_after_them_go() {
        assert_eq!(
            strip_reasoning("<think>\nplan\n</think>\n\nAnswer."),
            "Answer."
        );
        assert_eq!(strip_reasoning("A <think>x</think> B"), "A B");
        assert_eq!(strip_reasoning("plan</think>Answer"), "Answer");
        assert_eq!(strip_reasoning("no blocks"), "no blocks");
        assert_eq!(strip_reasoning("<think>a</think>1<think>b</think>2"), "12");
    }
}
