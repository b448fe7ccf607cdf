//! Incremental detokenization: turns a growing list of token ids into text pieces that
//! never split a UTF-8 character (byte-level BPE tokens can end mid-character).

use crate::model::{ModelError, Tokenizer};

/// Emits the text each new token adds, holding back incomplete characters.
pub struct TokenStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    /// Start of the window that is re-decoded each step.
    prefix_start: usize,
    /// End of the part of the window already emitted.
    emitted_end: usize,
    skip_special: bool,
}

impl<'a> TokenStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer, skip_special: bool) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            prefix_start: 0,
            emitted_end: 0,
            skip_special,
        }
    }

    /// Adds a token and returns the new complete text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, ModelError> {
        let prev = self.tokenizer.decode(
            &self.ids[self.prefix_start..self.emitted_end],
            self.skip_special,
        )?;
        self.ids.push(id);
        let now = self
            .tokenizer
            .decode(&self.ids[self.prefix_start..], self.skip_special)?;
        if now.len() > prev.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&prev) {
            let piece = now[prev.len()..].to_string();
            self.prefix_start = self.emitted_end;
            self.emitted_end = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }

    /// Whatever is still held back (an incomplete character at the very end).
    pub fn finish(&mut self) -> Result<Option<String>, ModelError> {
        let prev = self.tokenizer.decode(
            &self.ids[self.prefix_start..self.emitted_end],
            self.skip_special,
        )?;
        let now = self
            .tokenizer
            .decode(&self.ids[self.prefix_start..], self.skip_special)?;
        self.emitted_end = self.ids.len();
        Ok((now.len() > prev.len() && now.starts_with(&prev))
            .then(|| now[prev.len()..].to_string()))
    }
}
