//! The key/value cache of generation on plain buffers: per layer, keys and values laid out
//! `[kv_heads, capacity, head_dim]`, so each head's history is one contiguous run that the
//! decode step's attention reads in place; grown by doubling.

use candle_core::{Device, Result, Tensor};

use super::config::ModelConfig;

/// One layer's keys and values.
#[derive(Debug, Clone)]
pub struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
    len: usize,
    capacity: usize,
    heads: usize,
    head_dim: usize,
}

impl LayerKv {
    fn new(heads: usize, head_dim: usize) -> Self {
        Self {
            k: Vec::new(),
            v: Vec::new(),
            len: 0,
            capacity: 0,
            heads,
            head_dim,
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Head `h`'s keys and values for every position so far (`len · head_dim` each).
    pub fn head(&self, h: usize) -> (&[f32], &[f32]) {
        let start = h * self.capacity * self.head_dim;
        let end = start + self.len * self.head_dim;
        (&self.k[start..end], &self.v[start..end])
    }

    fn reserve(&mut self, more: usize) {
        let need = self.len + more;
        if need <= self.capacity {
            return;
        }
        let capacity = need.max(self.capacity * 2).max(256);
        let d = self.head_dim;
        let mut k = vec![0f32; self.heads * capacity * d];
        let mut v = vec![0f32; self.heads * capacity * d];
        for h in 0..self.heads {
            let (from, to) = (h * self.capacity * d, h * capacity * d);
            let n = self.len * d;
            k[to..to + n].copy_from_slice(&self.k[from..from + n]);
            v[to..to + n].copy_from_slice(&self.v[from..from + n]);
        }
        (self.k, self.v, self.capacity) = (k, v, capacity);
    }

    /// Appends `t` positions given token-major, `[t, heads · head_dim]` each.
    pub fn append(&mut self, k: &[f32], v: &[f32]) {
        let d = self.head_dim;
        let row = self.heads * d;
        let t = k.len() / row.max(1);
        self.reserve(t);
        for tok in 0..t {
            for h in 0..self.heads {
                let src = tok * row + h * d;
                let dst = (h * self.capacity + self.len + tok) * d;
                self.k[dst..dst + d].copy_from_slice(&k[src..src + d]);
                self.v[dst..dst + d].copy_from_slice(&v[src..src + d]);
            }
        }
        self.len += t;
    }

    /// Everything held as head-major tensors `[1, heads, len, head_dim]` (the dense
    /// attention path of a prompt that continues the cache).
    pub fn tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let d = self.head_dim;
        let mut k = Vec::with_capacity(self.heads * self.len * d);
        let mut v = Vec::with_capacity(self.heads * self.len * d);
        for h in 0..self.heads {
            let (kh, vh) = self.head(h);
            k.extend_from_slice(kh);
            v.extend_from_slice(vh);
        }
        let shape = (1, self.heads, self.len, d);
        Ok((
            Tensor::from_vec(k, shape, device)?,
            Tensor::from_vec(v, shape, device)?,
        ))
    }
}

/// Per-layer key/value cache for generation (one sequence).
#[derive(Debug, Clone)]
pub struct Cache {
    pub(super) layers: Vec<LayerKv>,
}

impl Cache {
    pub fn new(cfg: &ModelConfig) -> Self {
        Self {
            layers: (0..cfg.num_hidden_layers)
                .map(|_| LayerKv::new(cfg.num_key_value_heads, cfg.head_dim))
                .collect(),
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerKv::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        for c in &mut self.layers {
            c.len = 0;
        }
    }
}
