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
/// positions that restart at each sample, and a sample id per token. Rows are never padded:
/// [`super::data::micro_batch`] lays a micro-batch's rows end to end.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackedRow {
    pub ids: Vec<u32>,
    pub targets: Vec<Option<u32>>,
    pub positions: Vec<u32>,
    pub segments: Vec<u32>,
}

impl PackedRow {
    pub fn trained_tokens(&self) -> usize {
        self.targets.iter().filter(|t| t.is_some()).count()
    }

    /// Appends one example (cut at `max` tokens) as the row's next segment.
    pub(crate) fn push(&mut self, ex: &Example, max: usize) {
        let seg = self.segments.last().map_or(0, |s| s + 1);
        let n = ex.ids.len().min(max);
        for i in 0..n {
            self.ids.push(ex.ids[i]);
            self.positions.push(i as u32);
            self.segments.push(seg);
            // The logit at position i predicts token i + 1.
            let target = (i + 1 < n && ex.train[i + 1]).then(|| ex.ids[i + 1]);
            self.targets.push(target);
        }
    }
}

/// One example alone in its row.
pub fn single_row(ex: &Example) -> PackedRow {
    let mut row = PackedRow::default();
    row.push(ex, ex.ids.len());
    row
}

/// Packs examples into rows of at most `row_len` tokens, best-fit decreasing: longest
/// first, each into the row whose free room fits it most tightly, a new row when none
/// does. That fills rows to within a few percent of full, where packing in arrival order
/// leaves about a third of every row as padding. Examples of equal length keep their
/// order, so the result is a function of the input order; callers shuffle the rows.
pub fn pack(examples: &[&Example], row_len: usize) -> Vec<PackedRow> {
    let len = |ex: &Example| ex.ids.len().min(row_len);
    let mut order: Vec<&Example> = examples.iter().copied().filter(|e| len(e) > 0).collect();
    order.sort_by_key(|e| std::cmp::Reverse(len(e)));
    let mut rows: Vec<PackedRow> = Vec::new();
    // Free room -> rows with exactly that much room left.
    let mut by_room: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for ex in order {
        let n = len(ex);
        let found = by_room.range_mut(n..).next().map(|(&room, list)| {
            let row = list.pop();
            (room, row, list.is_empty())
        });
        let (room, index) = match found {
            Some((room, Some(index), emptied)) => {
                if emptied {
                    by_room.remove(&room);
                }
                (room, index)
            }
            _ => {
                rows.push(PackedRow::default());
                (row_len, rows.len() - 1)
            }
        };
        rows[index].push(ex, row_len);
        if room > n {
            by_room.entry(room - n).or_default().push(index);
        }
    }
    rows
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
        let rows = pack(&[&a, &b, &c], 6);
        assert_eq!(rows.len(), 2);
        // Longest first: c opens row 0, a opens row 1, b fits the 2 left in row 0.
        assert_eq!(rows[0].ids, vec![6, 7, 8, 9, 4, 5]);
        assert_eq!(rows[0].positions, vec![0, 1, 2, 3, 0, 1]);
        assert_eq!(rows[0].segments, vec![0, 0, 0, 0, 1, 1]);
        assert_eq!(
            rows[0].targets,
            vec![None, Some(8), Some(9), None, Some(5), None]
        );
        assert_eq!(rows[1].ids, vec![1, 2, 3]);
        assert_eq!(rows[1].targets, vec![Some(2), Some(3), None]);
        assert_eq!(rows[1].trained_tokens(), 2);
    }

    #[test]
    fn best_fit_fills_rows_and_keeps_every_token_once() {
        // Lengths 1..=40 (820 tokens) fit exactly into 10 rows of 82 tokens.
        let exs: Vec<Example> = (1..=40u32)
            .map(|n| ex(&vec![n; n as usize], &vec![true; n as usize]))
            .collect();
        let refs: Vec<&Example> = exs.iter().collect();
        let rows = pack(&refs, 82);
        assert!(rows.iter().all(|r| r.ids.len() <= 82));
        assert_eq!(rows.iter().map(|r| r.ids.len()).sum::<usize>(), 820);
        assert!(rows.len() <= 11, "{} rows", rows.len());
        let mut seen: Vec<u32> = rows.iter().flat_map(|r| r.ids.clone()).collect();
        seen.sort();
        let mut want: Vec<u32> = (1..=40u32).flat_map(|n| vec![n; n as usize]).collect();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn over_long_examples_are_cut_to_the_row() {
        let a = ex(&[1, 2, 3, 4, 5], &[true; 5]);
        let rows = pack(&[&a], 3);
        assert_eq!(rows, vec![single_row(&ex(&[1, 2, 3], &[true; 3]))]);
    }
}
