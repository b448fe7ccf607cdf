//! How the count checks count: words, sentences, bullets and paragraphs of a reply, with
//! simple rules close to IFEval's, written down here so a suite author can predict them.

/// Whitespace-separated tokens with at least one letter or digit (`-` and `—` alone are
/// not words; `don't` and `e-mail` are one).
pub fn words(text: &str) -> usize {
    text.split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count()
}

/// Pieces of text ended by `.`, `!` or `?` (a run of them ends one sentence) followed by
/// whitespace or the end of the text, or by the end of the text itself; a piece counts
/// when it has a letter or digit. A dot inside a token (`3.14`, `e.g.x`) ends nothing.
pub fn sentences(text: &str) -> usize {
    let chars: Vec<char> = text.chars().collect();
    let mut count = 0;
    let mut has_content = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() {
            has_content = true;
        }
        if matches!(c, '.' | '!' | '?') {
            let mut j = i;
            while j + 1 < chars.len() && matches!(chars[j + 1], '.' | '!' | '?') {
                j += 1;
            }
            let at_boundary = j + 1 >= chars.len() || chars[j + 1].is_whitespace();
            if at_boundary && has_content {
                count += 1;
                has_content = false;
            }
            i = j + 1;
            continue;
        }
        // A paragraph break ends an unpunctuated sentence (a heading, a list item).
        if c == '\n' && chars.get(i + 1) == Some(&'\n') && has_content {
            count += 1;
            has_content = false;
        }
        i += 1;
    }
    if has_content {
        count += 1;
    }
    count
}

/// Lines that start (after indentation) with `*`, `-`, `+` or `•` followed by a space.
pub fn bullets(text: &str) -> usize {
    text.lines()
        .filter(|line| {
            let t = line.trim_start();
            let mut cs = t.chars();
            matches!(cs.next(), Some('*' | '-' | '+' | '•'))
                && cs.next().is_some_and(char::is_whitespace)
        })
        .count()
}

/// Blocks of non-blank lines separated by one or more blank lines or by a line of `***`
/// (IFEval's divider).
pub fn paragraphs(text: &str) -> usize {
    let mut count = 0;
    let mut in_block = false;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t == "***" {
            in_block = false;
        } else if !in_block {
            count += 1;
            in_block = true;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words() {
        assert_eq!(words(""), 0);
        assert_eq!(words("Hello, world - don't panic!"), 4);
        assert_eq!(words("  one\ttwo\nthree  "), 3);
    }

    #[test]
    fn counts_sentences() {
        assert_eq!(sentences(""), 0);
        assert_eq!(sentences("One. Two! Three?"), 3);
        assert_eq!(sentences("Pi is 3.14 exactly. Really?!"), 2);
        assert_eq!(sentences("No final stop"), 1);
        assert_eq!(sentences("Title\n\nBody text here."), 2);
        assert_eq!(sentences("... ?"), 0);
    }

    #[test]
    fn counts_bullets() {
        assert_eq!(bullets("Intro\n* a\n- b\n  + c\n• d\n-e\n**bold**"), 4);
        assert_eq!(bullets("no list"), 0);
    }

    #[test]
    fn counts_paragraphs() {
        assert_eq!(paragraphs(""), 0);
        assert_eq!(paragraphs("one\nstill one"), 1);
        assert_eq!(paragraphs("one\n\n\ntwo\n   \nthree"), 3);
        assert_eq!(paragraphs("one\n***\ntwo"), 2);
    }
}
