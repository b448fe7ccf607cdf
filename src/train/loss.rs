//! Cross-entropy over the trained positions only, computed in chunks of rows so the full
//! `[tokens, vocab]` logits never exist at once.

use candle_core::{DType, Result, Tensor, D};

use crate::model::Transformer;

/// Rows of logits computed at once.
pub const LOSS_CHUNK_ROWS: usize = 256;

/// Sum of per-token cross-entropy over `targets` and the count, for hidden states
/// `[n, hidden]` (already normalized). Rows with no target are skipped before the LM head.
pub fn cross_entropy_sum(
    model: &Transformer,
    hidden: &Tensor,
    targets: &[Option<u32>],
) -> Result<(Tensor, usize)> {
    let rows: Vec<u32> = targets
        .iter()
        .enumerate()
        .filter(|(_, t)| t.is_some())
        .map(|(i, _)| i as u32)
        .collect();
    let labels: Vec<u32> = targets.iter().filter_map(|t| *t).collect();
    let device = hidden.device();
    let mut total = Tensor::zeros((), DType::F32, device)?;
    for (chunk_rows, chunk_labels) in rows
        .chunks(LOSS_CHUNK_ROWS)
        .zip(labels.chunks(LOSS_CHUNK_ROWS))
    {
        let idx = Tensor::new(chunk_rows, device)?;
        let h = hidden.index_select(&idx, 0)?;
        let logits = model.logits(&h, false)?;
        let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let lab = Tensor::new(chunk_labels, device)?.unsqueeze(1)?;
        let picked = lsm.gather(&lab, 1)?;
        total = (total - picked.sum_all()?)?;
    }
    Ok((total, labels.len()))
}

/// Per-token losses (for eval's per-example figures), same layout as [`cross_entropy_sum`].
pub fn token_losses(
    model: &Transformer,
    hidden: &Tensor,
    targets: &[Option<u32>],
) -> Result<Vec<f32>> {
    let rows: Vec<u32> = targets
        .iter()
        .enumerate()
        .filter(|(_, t)| t.is_some())
        .map(|(i, _)| i as u32)
        .collect();
    let labels: Vec<u32> = targets.iter().filter_map(|t| *t).collect();
    let device = hidden.device();
    let mut out = Vec::with_capacity(labels.len());
    for (chunk_rows, chunk_labels) in rows
        .chunks(LOSS_CHUNK_ROWS)
        .zip(labels.chunks(LOSS_CHUNK_ROWS))
    {
        let idx = Tensor::new(chunk_rows, device)?;
        let h = hidden.index_select(&idx, 0)?;
        let logits = model.logits(&h, false)?;
        let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let lab = Tensor::new(chunk_labels, device)?.unsqueeze(1)?;
        let picked: Vec<f32> = lsm.gather(&lab, 1)?.flatten_all()?.to_vec1()?;
        out.extend(picked.into_iter().map(|x| -x));
    }
    Ok(out)
}
