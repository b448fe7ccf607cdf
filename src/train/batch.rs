//! Turning conversations into training examples: the model's chat template applied, the
//! tokens that train marked (assistant turns by default, or all), over-long samples
//! truncated, and examples packed into fixed-length rows with per-sample positions.

use crate::model::{ChatMessage, Model, ModelError};

/// One tokenized conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// `train[i]`: whether token `i` is a target (predicted from tokens before it).
    pub train: Vec<bool>,
    /// Whether the sample was cut at the maximum length.
    pub truncated: bool,
}

impl Example {
    pub fn trained_tokens(&self) -> usize {
        self.train.iter().skip(1).filter(|&&t| t).count()
    }
}

/// Renders and tokenizes `messages`; `all_tokens` trains on every token instead of only
/// the assistant turns.
pub fn tokenize_conversation(
    model: &Model,
    messages: &[ChatMessage],
    max_len: usize,
    all_tokens: bool,
) -> Result<Example, ModelError> {
    let (text, spans) = model.template.render_with_assistant_spans(messages)?;
    let (mut ids, offsets) = model.tokenizer.encode_with_offsets(&text)?;
    let mut train: Vec<bool> = offsets
        .iter()
        .map(|&(s, e)| all_tokens || spans.iter().any(|sp| s < sp.end && e > sp.start))
        .collect();
    let truncated = ids.len() > max_len;
    if truncated {
        ids.truncate(max_len);
        train.truncate(max_len);
    }
    Ok(Example {
        ids,
        train,
        truncated,
    })
}

/// A row of packed examples: tokens, the next-token targets (`None` where nothing trains),
/// positions that restart at each sample, and a sample id per token.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackedRow {
    pub ids: Vec<u32>,
    pub targets: Vec<Option<u32>>,
    pub positions: Vec<u32>,
    pub segments: Vec<u32>,
    /// Tokens before the padding.
    pub real: usize,
}

impl PackedRow {
    pub fn trained_tokens(&self) -> usize {
        self.targets.iter().filter(|t| t.is_some()).count()
    }
}

/// Packs examples, in order, into rows of at most `row_len` tokens (first fit on the
/// current row, a new row when full). Rows are padded with `pad_id` to `row_len`; padding
/// is its own segment and never a target.
pub fn pack(examples: &[&Example], row_len: usize, pad_id: u32) -> Vec<PackedRow> {
    let mut rows: Vec<PackedRow> = Vec::new();
    let mut cur = PackedRow {
        ids: vec![],
        targets: vec![],
        positions: vec![],
        segments: vec![],
        real: 0,
    };
    let mut seg = 0u32;
    for ex in examples {
        let n = ex.ids.len().min(row_len);
        if n == 0 {
            continue;
        }
        if cur.ids.len() + n > row_len {
            rows.push(finish_row(
                std::mem::replace(
                    &mut cur,
                    PackedRow {
                        ids: vec![],
                        targets: vec![],
                        positions: vec![],
                        segments: vec![],
                        real: 0,
                    },
                ),
                row_len,
                pad_id,
                seg + 1,
            ));
            seg = 0;
        }
        for i in 0..n {
            cur.ids.push(ex.ids[i]);
            cur.positions.push(i as u32);
            cur.segments.push(seg);
            // The logit at position i predicts token i + 1.
            let target = (i + 1 < n && ex.train[i + 1]).then(|| ex.ids[i + 1]);
            cur.targets.push(target);
        }
        seg += 1;
    }
    if !cur.ids.is_empty() {
        rows.push(finish_row(cur, row_len, pad_id, seg + 1));
    }
    rows
}

fn finish_row(mut row: PackedRow, row_len: usize, pad_id: u32, pad_segment: u32) -> PackedRow {
    row.real = row.ids.len();
    while row.ids.len() < row_len {
        row.ids.push(pad_id);
        row.targets.push(None);
        row.positions.push(0);
        row.segments.push(pad_segment);
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32], train: &[bool]) -> Example {
        Example {
            ids: ids.to_vec(),
            train: train.to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn packing_resets_positions_and_never_trains_padding() {
        let a = ex(&[1, 2, 3], &[false, true, true]);
        let b = ex(&[4, 5], &[false, true]);
        let c = ex(&[6, 7, 8, 9], &[false, false, true, true]);
        let rows = pack(&[&a, &b, &c], 6, 0);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ids, vec![1, 2, 3, 4, 5, 0]);
        assert_eq!(rows[0].positions, vec![0, 1, 2, 0, 1, 0]);
        assert_eq!(rows[0].segments, vec![0, 0, 0, 1, 1, 3]);
        assert_eq!(
            rows[0].targets,
            vec![Some(2), Some(3), None, Some(5), None, None]
        );
        assert_eq!(
            rows[1].targets,
            vec![None, Some(8), Some(9), None, None, None]
        );
        assert_eq!(rows[1].trained_tokens(), 2);
    }
}
