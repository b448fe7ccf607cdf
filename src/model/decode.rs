//! The single-token decode step on plain buffers. For one token, candle's per-op tensors
//! (an allocation, a dispatch and a copy for each of the ~25 small ops of a layer) cost
//! more than the arithmetic: on the default model they were half of each token's time
//! while the other core waited. Here the step runs on `Vec<f32>`s through the same
//! kernels (`vec_math`, the stored matrices' dot products) and reads the KV cache in place;
//! the math is `Transformer::forward`'s, and the tests hold the two to each other.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::kv_cache::{Cache, LayerKv};
use super::linear::{FrozenWeight, Linear};
use super::lora::{LoraPair, LoraSet, LoraTarget};
use super::transformer::{RmsNorm, Transformer};
use crate::ops::slice_gemm::with_slice;
use crate::ops::vec_math;

/// Runs `token` at the next position of `cache` and returns the final hidden state
/// (after the last norm), `[hidden]`.
pub fn step(
    model: &Transformer,
    token: u32,
    cache: &mut Cache,
    lora: Option<&LoraSet>,
) -> Result<Vec<f32>> {
    let cfg = &model.config;
    let pos = cache.len();
    if pos + 1 > model.rope.max_positions() {
        candle_core::bail!(
            "sequence of {} tokens exceeds the {} positions this model supports",
            pos + 1,
            model.rope.max_positions()
        );
    }
    let ids = Tensor::new(&[token], model.device())?;
    let mut x: Vec<f32> = model.embed_tokens.rows(&ids)?.flatten_all()?.to_vec1()?;
    if cfg.style.scale_embeddings {
        // As the prefill: √hidden rounded to f32, then one product per value.
        let s = (cfg.hidden_size as f64).sqrt() as f32;
        x.iter_mut().for_each(|v| *v *= s);
    }
    let tables = |rope: &super::rope::Rope| -> Result<(Vec<f32>, Vec<f32>)> {
        let (cos, sin) = rope.range(pos, 1)?;
        Ok((cos.flatten_all()?.to_vec1()?, sin.flatten_all()?.to_vec1()?))
    };
    let full = tables(&model.rope)?;
    let local = match &model.rope_local {
        Some(r) => Some(tables(r)?),
        None => None,
    };
    let (nh, nkv, hd) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    let scale = cfg.attention_scale() as f32;
    let mut xn = vec![0f32; cfg.hidden_size];
    for (i, l) in model.layers.iter().enumerate() {
        let pair = |t: LoraTarget| lora.and_then(|s| s.get(i, t));
        let window = cfg.style.window(i);
        let (cos, sin) = match (window, &local) {
            (Some(_), Some(local)) => local,
            _ => &full,
        };
        norm(&l.input_norm, &x, &mut xn)?;
        // The three products of one input run side by side, each split over the threads
        // as well: the threads take the next product's work instead of waiting at the end
        // of each.
        let (q, (k, v)) = rayon::join(
            || linear(&l.q_proj, &xn, pair(LoraTarget::QProj)),
            || {
                rayon::join(
                    || linear(&l.k_proj, &xn, pair(LoraTarget::KProj)),
                    || linear(&l.v_proj, &xn, pair(LoraTarget::VProj)),
                )
            },
        );
        let (mut q, mut k, v) = (q?, k?, v?);
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            norm_heads(qn, &mut q, hd)?;
            norm_heads(kn, &mut k, hd)?;
        }
        rotate(&mut q, hd, cos, sin);
        rotate(&mut k, hd, cos, sin);
        let layer_cache = &mut cache.layers[i];
        layer_cache.append(&k, &v);
        let attn = attend(&q, layer_cache, (nh, nkv, hd), scale, window);
        let mut o = linear(&l.o_proj, &attn, pair(LoraTarget::OProj))?;
        if let Some(n) = &l.attn_out_norm {
            norm_in_place(n, &mut o)?;
        }
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        norm(&l.pre_mlp_norm, &x, &mut xn)?;
        let (gate, up) = rayon::join(
            || linear(&l.gate_proj, &xn, pair(LoraTarget::GateProj)),
            || linear(&l.up_proj, &xn, pair(LoraTarget::UpProj)),
        );
        let (gate, up) = (gate?, up?);
        let mut act = vec![0f32; gate.len()];
        cfg.style.activation.forward(&gate, &up, &mut act);
        let mut down = linear(&l.down_proj, &act, pair(LoraTarget::DownProj))?;
        if let Some(n) = &l.mlp_out_norm {
            norm_in_place(n, &mut down)?;
        }
        x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
    }
    let mut out = vec![0f32; x.len()];
    norm(&model.norm, &x, &mut out)?;
    Ok(out)
}

fn norm(n: &RmsNorm, x: &[f32], out: &mut [f32]) -> Result<()> {
    with_slice(&n.weight, |w| {
        vec_math::rms_norm_row(x, w, n.eps, out);
        Ok(())
    })
}

/// RMSNorm of `x` in place (Gemma's norms of the attention and MLP outputs).
fn norm_in_place(n: &RmsNorm, x: &mut [f32]) -> Result<()> {
    let src = x.to_vec();
    norm(n, &src, x)
}

/// RMSNorm of each `hd`-value head of `x`, in place (Qwen3's and Gemma 3's q/k norm).
fn norm_heads(n: &RmsNorm, x: &mut [f32], hd: usize) -> Result<()> {
    with_slice(&n.weight, |w| {
        for head in x.chunks_exact_mut(hd) {
            let src = head.to_vec();
            vec_math::rms_norm_row(&src, w, n.eps, head);
        }
        Ok(())
    })
}

/// `x Wᵀ (+ b) (+ s · B A x)` for one row.
fn linear(l: &Linear, x: &[f32], lora: Option<&LoraPair>) -> Result<Vec<f32>> {
    let mut y = vec![0f32; l.out_features()];
    match &l.weight {
        FrozenWeight::Stored(q) => q.matmul(x, 1, &mut y).map_err(candle_core::Error::Msg)?,
        FrozenWeight::F32(w) => with_slice(w, |w| {
            crate::ops::frozen_matmul::matvec(&mut y, x, w);
            Ok(())
        })?,
    }
    if let Some(b) = &l.bias {
        with_slice(b, |b| {
            y.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            Ok(())
        })?;
    }
    if let Some(p) = lora {
        let a = p.a.contiguous()?;
        let b = p.b.contiguous()?;
        let rank = a.dims()[0];
        let mut u = vec![0f32; rank];
        with_slice(&a, |a| {
            vec_math::dot_rows(&mut u, a, x);
            Ok(())
        })?;
        u.iter_mut().for_each(|v| *v *= p.scale as f32);
        let mut delta = vec![0f32; y.len()];
        with_slice(&b, |b| {
            vec_math::dot_rows(&mut delta, b, &u);
            Ok(())
        })?;
        y.iter_mut().zip(&delta).for_each(|(y, d)| *y += d);
    }
    Ok(y)
}

/// Rotary embedding of every head of `x` in place, in the `rotate_half` layout.
fn rotate(x: &mut [f32], hd: usize, cos: &[f32], sin: &[f32]) {
    let half = hd / 2;
    for head in x.chunks_exact_mut(hd) {
        let (x1, x2) = head.split_at_mut(half);
        for j in 0..half {
            let (a, b) = (x1[j], x2[j]);
            x1[j] = a * cos[j] - b * sin[j];
            x2[j] = b * cos[j] + a * sin[j];
        }
    }
}

/// Attention of one query token over every cached position (the last `window` of them on
/// a sliding layer), each query head against its KV head; heads split over the threads
/// when the history is long enough to pay for it.
fn attend(
    q: &[f32],
    cache: &LayerKv,
    (nh, nkv, hd): (usize, usize, usize),
    scale: f32,
    window: Option<usize>,
) -> Vec<f32> {
    let n_rep = nh / nkv.max(1);
    let len = cache.len();
    let skip = window.map_or(0, |w| len.saturating_sub(w));
    let len = len - skip;
    let mut out = vec![0f32; nh * hd];
    let one_head = |h: usize, o: &mut [f32]| {
        let (k, v) = cache.head(h / n_rep.max(1));
        let (k, v) = (&k[skip * hd..], &v[skip * hd..]);
        let qh = &q[h * hd..(h + 1) * hd];
        let mut scores = vec![0f32; len];
        vec_math::dot_rows(&mut scores, k, qh);
        vec_math::softmax_in_place(&mut scores, scale);
        o.fill(0.0);
        vec_math::add_weighted_rows(o, &scores, v);
    };
    if len * nh * hd < 1 << 16 {
        out.chunks_exact_mut(hd)
            .enumerate()
            .for_each(|(h, o)| one_head(h, o));
    } else {
        out.par_chunks_exact_mut(hd)
            .enumerate()
            .for_each(|(h, o)| one_head(h, o));
    }
    out
}
