//! The one decoder (Llama, SmolLM2, Mistral, Qwen2/2.5, Qwen3, Gemma 3): frozen base
//! weights (as the file stores them, or f32), optional LoRA adapters passed per call, an
//! external KV cache, and packed sequences for training. Where the families differ, the
//! layers read the config's [`BlockStyle`](super::config::BlockStyle): the activation,
//! the embedding scale, Gemma's extra norms, the q/k norm, the attention scale, and per
//! layer kind (full or sliding window) the RoPE table and the window. Generation and
//! training both run through `Transformer::forward`.

use candle_core::{Device, Result, Tensor};

use super::config::{LayerKind, ModelConfig};
pub use super::kv_cache::Cache;
use super::kv_cache::LayerKv;
pub use super::linear::{FrozenWeight, Linear, MatmulMode};
use super::lora::{LoraSet, LoraTarget};
use super::rope::{self, Rope};
use super::weights::WeightSource;
use super::ModelError;
use crate::ops::dropout::DropoutMask;
use crate::ops::segment_attention;

/// RMSNorm weights.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f32,
}

impl RmsNorm {
    /// The same op in training and generation (its backward only matters in training).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::train_ops::rms_norm(x, &self.weight, self.eps)
    }
}

/// One decoder block's weights.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub input_norm: RmsNorm,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// Qwen3's and Gemma 3's per-head RMSNorm on queries and keys.
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    /// Gemma's norm of the attention output, before the residual add
    /// (`post_attention_layernorm` in Gemma checkpoints).
    pub attn_out_norm: Option<RmsNorm>,
    /// The norm before the MLP: Llama's `post_attention_layernorm`, Gemma's
    /// `pre_feedforward_layernorm`.
    pub pre_mlp_norm: RmsNorm,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    /// Gemma's norm of the MLP output, before the residual add.
    pub mlp_out_norm: Option<RmsNorm>,
}

impl DecoderLayer {
    pub fn linear(&self, target: LoraTarget) -> &Linear {
        match target {
            LoraTarget::QProj => &self.q_proj,
            LoraTarget::KProj => &self.k_proj,
            LoraTarget::VProj => &self.v_proj,
            LoraTarget::OProj => &self.o_proj,
            LoraTarget::GateProj => &self.gate_proj,
            LoraTarget::UpProj => &self.up_proj,
            LoraTarget::DownProj => &self.down_proj,
        }
    }

    pub fn linear_mut(&mut self, target: LoraTarget) -> &mut Linear {
        match target {
            LoraTarget::QProj => &mut self.q_proj,
            LoraTarget::KProj => &mut self.k_proj,
            LoraTarget::VProj => &mut self.v_proj,
            LoraTarget::OProj => &mut self.o_proj,
            LoraTarget::GateProj => &mut self.gate_proj,
            LoraTarget::UpProj => &mut self.up_proj,
            LoraTarget::DownProj => &mut self.down_proj,
        }
    }
}

/// How positions and attention are laid out in a call.
#[derive(Debug, Clone, Default)]
pub enum Layout {
    /// One causal sequence per row, positions continuing from the cache.
    #[default]
    Causal,
    /// Several samples packed per row: explicit positions `[b, t]` (reset at each sample)
    /// and a sample id per token `[b, t]`; no attention crosses a sample boundary.
    Packed { positions: Tensor, segments: Tensor },
}

/// Options of one forward call.
#[derive(Default)]
pub struct Forward<'a> {
    pub cache: Option<&'a mut Cache>,
    pub lora: Option<&'a LoraSet>,
    pub layout: Layout,
    /// Run the training ops (the fused LoRA linear, segment attention, norms: each with a
    /// backward written by hand), so that candle's autograd differentiates the output with
    /// respect to the adapter at the cost of nothing spent on the frozen weights.
    pub training_ops: bool,
    /// Apply adapter dropout (training), with masks drawn from this seed so that a run
    /// and its resumption see the same masks.
    pub dropout_seed: Option<u64>,
}

/// The Llama-family decoder.
#[derive(Debug, Clone)]
pub struct Transformer {
    pub config: ModelConfig,
    pub embed_tokens: FrozenWeight,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    pub lm_head: Linear,
    /// Whether `lm_head` is the embedding matrix (tied embeddings).
    tied: bool,
    /// The rotary tables of the full-attention layers.
    pub(super) rope: Rope,
    /// Those of the sliding-window layers, where their base differs (Gemma 3).
    pub(super) rope_local: Option<Rope>,
    device: Device,
}

fn load_linear(
    src: &mut dyn WeightSource,
    prefix: &str,
    out: usize,
    inp: usize,
    bias: bool,
) -> std::result::Result<Linear, ModelError> {
    let weight = src.get_frozen(&format!("{prefix}.weight"), &[out, inp])?;
    let bias = if bias {
        Some(src.get(&format!("{prefix}.bias"), &[out])?)
    } else {
        None
    };
    Ok(Linear { weight, bias })
}

impl Transformer {
    /// Loads every weight from `src` (HF names; matrices as the source stores them, the
    /// rest as f32), checking shapes against `config`.
    pub fn load(
        config: ModelConfig,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> std::result::Result<Self, ModelError> {
        let c = &config;
        let h = c.hidden_size;
        let q_dim = c.num_attention_heads * c.head_dim;
        let kv_dim = c.num_key_value_heads * c.head_dim;
        let eps = c.rms_norm_eps as f32;
        // Gemma's norms are `x · (1 + w)`: the layers hold `1 + w`, added here unless the
        // file already holds it (llama.cpp's GGUF files do).
        let add_one = c.style.norm_unit_offset && !src.norms_hold_unit_offset();
        let norm = |src: &mut dyn WeightSource,
                    name: &str,
                    n: usize|
         -> std::result::Result<RmsNorm, ModelError> {
            let weight = src.get(name, &[n])?;
            let weight = if add_one { (weight + 1.0)? } else { weight };
            Ok(RmsNorm { weight, eps })
        };
        let sandwich = c.style.sandwich_norms;
        let embed_tokens = src.get_frozen("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let qk_norm = c.style.qk_norm;
            let sandwich_norm = |src: &mut dyn WeightSource, name: &str| {
                sandwich
                    .then(|| norm(src, &format!("{p}.{name}.weight"), h))
                    .transpose()
            };
            let pre_mlp_name = if sandwich {
                "pre_feedforward_layernorm"
            } else {
                "post_attention_layernorm"
            };
            layers.push(DecoderLayer {
                input_norm: norm(src, &format!("{p}.input_layernorm.weight"), h)?,
                q_proj: load_linear(
                    src,
                    &format!("{p}.self_attn.q_proj"),
                    q_dim,
                    h,
                    c.attention_bias,
                )?,
                k_proj: load_linear(
                    src,
                    &format!("{p}.self_attn.k_proj"),
                    kv_dim,
                    h,
                    c.attention_bias,
                )?,
                v_proj: load_linear(
                    src,
                    &format!("{p}.self_attn.v_proj"),
                    kv_dim,
                    h,
                    c.attention_bias,
                )?,
                o_proj: load_linear(src, &format!("{p}.self_attn.o_proj"), h, q_dim, false)?,
                q_norm: if qk_norm {
                    Some(norm(
                        src,
                        &format!("{p}.self_attn.q_norm.weight"),
                        c.head_dim,
                    )?)
                } else {
                    None
                },
                k_norm: if qk_norm {
                    Some(norm(
                        src,
                        &format!("{p}.self_attn.k_norm.weight"),
                        c.head_dim,
                    )?)
                } else {
                    None
                },
                attn_out_norm: sandwich_norm(src, "post_attention_layernorm")?,
                pre_mlp_norm: norm(src, &format!("{p}.{pre_mlp_name}.weight"), h)?,
                gate_proj: load_linear(
                    src,
                    &format!("{p}.mlp.gate_proj"),
                    c.intermediate_size,
                    h,
                    false,
                )?,
                up_proj: load_linear(
                    src,
                    &format!("{p}.mlp.up_proj"),
                    c.intermediate_size,
                    h,
                    false,
                )?,
                down_proj: load_linear(
                    src,
                    &format!("{p}.mlp.down_proj"),
                    h,
                    c.intermediate_size,
                    false,
                )?,
                mlp_out_norm: sandwich_norm(src, "post_feedforward_layernorm")?,
            });
        }
        let norm_w = norm(src, "model.norm.weight", h)?;
        let tied = c.tie_word_embeddings || !src.contains("lm_head.weight");
        let lm_head = if tied {
            Linear {
                weight: embed_tokens.clone(),
                bias: None,
            }
        } else {
            Linear {
                weight: src.get_frozen("lm_head.weight", &[c.vocab_size, h])?,
                bias: None,
            }
        };
        let max_pos = super::rope::table_positions(c.max_position_embeddings);
        let rope = Rope::new(c, max_pos, device)?;
        let rope_local = Rope::local(c, max_pos, device)?;
        Ok(Self {
            config,
            embed_tokens,
            layers,
            norm: norm_w,
            lm_head,
            tied,
            rope,
            rope_local,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether `lm_head` shares the embedding matrix.
    pub fn ties_embeddings(&self) -> bool {
        self.tied
    }

    /// The same model with every matrix as f32 (dequantized where stored otherwise): the
    /// exact reference path, and what training runs on. Norms, biases and the rotary
    /// tables are shared.
    pub fn to_f32(&self) -> Result<Self> {
        let dev = &self.device;
        let mut out = self.clone();
        out.embed_tokens = FrozenWeight::F32(self.embed_tokens.to_f32(dev)?);
        for l in &mut out.layers {
            for t in LoraTarget::ALL {
                let f = l.linear(t).to_f32(dev)?;
                *l.linear_mut(t) = f;
            }
        }
        out.lm_head = if self.tied {
            Linear {
                weight: out.embed_tokens.clone(),
                bias: None,
            }
        } else {
            self.lm_head.to_f32(dev)?
        };
        Ok(out)
    }

    /// Whether every matrix is held as f32.
    pub fn is_f32(&self) -> bool {
        self.frozen_weights().all(|w| w.as_f32().is_some())
    }

    /// Bytes held by the weight matrices (the embedding once when tied).
    pub fn matrix_bytes(&self) -> usize {
        self.frozen_weights().map(FrozenWeight::byte_len).sum()
    }

    /// Every frozen matrix once: the layers' projections, the embedding, and the head
    /// unless it is the embedding.
    fn frozen_weights(&self) -> impl Iterator<Item = &FrozenWeight> {
        let layers = self
            .layers
            .iter()
            .flat_map(|l| LoraTarget::ALL.map(|t| &l.linear(t).weight));
        let head = (!self.tied).then_some(&self.lm_head.weight);
        layers
            .chain(std::iter::once(&self.embed_tokens))
            .chain(head)
    }

    /// Makes every stored matrix's products read its stored rows from now on: training
    /// dequantizes them, so a second, interleaved copy for decode steps would hold the
    /// weights twice.
    pub fn keep_stored_layouts(&self) {
        self.frozen_weights()
            .for_each(FrozenWeight::keep_stored_layout);
    }

    /// Builds now what the decode steps' products keep (the interleaved copies of the
    /// stored matrices that decode reads: the layers' projections and the head), rather
    /// than inside the first reply: on an 8B-shaped Q4_K_M file that first touch of 4.6
    /// GB of fresh memory took seconds of the first token. Stops early once training
    /// made the matrices keep their stored layout, and before the next matrix once
    /// `go_on` says no (the model was let go of). Returns the bytes of the matrices
    /// prepared.
    pub fn prepare_decode(&self, go_on: &dyn Fn() -> bool) -> usize {
        let decode_weights = self
            .layers
            .iter()
            .flat_map(|l| LoraTarget::ALL.map(|t| &l.linear(t).weight))
            .chain(std::iter::once(&self.lm_head.weight));
        decode_weights
            .take_while(|_| go_on())
            .map(FrozenWeight::prepare_products)
            .sum()
    }

    /// The storage types of the matrices, with their share of the bytes, largest first:
    /// e.g. `[("Q4_1", 0.69), ("Q8_0", 0.31)]`; f32 is "F32".
    pub fn storage_mix(&self) -> Vec<(&'static str, f64)> {
        let mut by_type: std::collections::BTreeMap<&'static str, usize> = Default::default();
        for w in self.frozen_weights() {
            let name = w.stored_type().map_or("F32", |t| t.name());
            *by_type.entry(name).or_default() += w.byte_len();
        }
        let total = by_type.values().sum::<usize>().max(1) as f64;
        let mut mix: Vec<(&'static str, f64)> = by_type
            .into_iter()
            .map(|(k, v)| (k, v as f64 / total))
            .collect();
        mix.sort_by(|a, b| b.1.total_cmp(&a.1));
        mix
    }

    /// Runs the decoder on `ids` `[b, t]` and returns the final hidden states `[b, t, hidden]`
    /// (after the last norm). Use [`Transformer::logits`] on the rows you need.
    pub fn forward(&self, ids: &Tensor, mut opts: Forward<'_>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let cfg = &self.config;
        if !opts.training_ops && b == 1 && t == 1 && matches!(opts.layout, Layout::Causal) {
            if let Some(cache) = opts.cache.as_deref_mut() {
                // One token continuing a cache: the decode step on plain buffers.
                let id = ids.flatten_all()?.to_vec1::<u32>()?[0];
                let h = super::decode::step(self, id, cache, opts.lora)?;
                return Tensor::from_vec(h, (1, 1, cfg.hidden_size), &self.device);
            }
        }
        let (mut x, plan) = self.prepare(ids, &opts)?;
        for i in 0..self.layers.len() {
            let cache = opts.cache.as_mut().map(|c| &mut c.layers[i]);
            x = self.run_layer(i, &x, cache, &plan)?;
        }
        self.norm.forward(&x)
    }

    /// The embedded input `[b, t, hidden]` of `ids` and what its layers share, for a
    /// caller that runs the layers one by one ([`Transformer::run_layer`]; training with
    /// gradient checkpointing). `opts.cache` only sets where positions start.
    pub fn prepare<'a>(&self, ids: &Tensor, opts: &Forward<'a>) -> Result<(Tensor, LayerPlan<'a>)> {
        let (b, t) = ids.dims2()?;
        let cfg = &self.config;
        let offset = opts.cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let x = self
            .embed_tokens
            .rows(&ids.flatten_all()?)?
            .reshape((b, t, cfg.hidden_size))?;
        // Gemma scales the embeddings by √hidden (the tied LM head reads them unscaled).
        let x = if cfg.style.scale_embeddings {
            (x * (cfg.hidden_size as f64).sqrt())?
        } else {
            x
        };

        let n_rep = cfg.num_attention_heads / cfg.num_key_value_heads;
        // The sliding layers' window and rotary tables, where any layer slides.
        let local = cfg
            .style
            .sliding_window
            .filter(|_| cfg.style.has_sliding_layers())
            .map(|w| (w, self.rope_local.as_ref().unwrap_or(&self.rope)));
        // Whole sequences and packed rows attend within segments through their own op; the
        // dense mask serves a prompt that continues a KV cache.
        let (full, local, spans) = match &opts.layout {
            Layout::Causal => {
                if offset + t > self.rope.max_positions() {
                    candle_core::bail!(
                        "sequence of {} tokens exceeds the {} positions this model supports",
                        offset + t,
                        self.rope.max_positions()
                    );
                }
                if opts.training_ops && offset > 0 {
                    candle_core::bail!("a differentiable forward takes no KV cache");
                }
                // A whole sequence (a prefill, or training): one causal segment per row.
                let whole = offset == 0 && t > 1;
                let tables = |rope: &Rope, window: Option<usize>| -> Result<KindTables> {
                    let (cos, sin) = rope.range(offset, t)?;
                    // A windowed query may lose keys even when it is alone.
                    let mask = if !whole && (t > 1 || window.is_some()) {
                        Some(causal_mask(t, offset, n_rep, window, &self.device)?)
                    } else {
                        None
                    };
                    Ok(KindTables { cos, sin, mask })
                };
                let full = tables(&self.rope, None)?;
                let local = local
                    .map(|(w, rope)| tables(rope, Some(w)).map(|k| (w, k)))
                    .transpose()?;
                let spans = whole.then(|| segment_attention::whole_rows(b, t));
                (full, local, spans)
            }
            Layout::Packed {
                positions,
                segments,
            } => {
                let tables = |rope: &Rope| -> Result<KindTables> {
                    let (cos, sin) = rope.gather(positions)?;
                    Ok(KindTables {
                        cos,
                        sin,
                        mask: None,
                    })
                };
                let full = tables(&self.rope)?;
                let local = local
                    .map(|(w, rope)| tables(rope).map(|k| (w, k)))
                    .transpose()?;
                let spans = segment_attention::spans_from_segments(segments)?;
                (full, local, Some(spans))
            }
        };
        let dropout = match opts.dropout_seed {
            Some(seed) => opts
                .lora
                .map(|l| (l.dropout, seed))
                .filter(|(p, _)| *p > 0.0),
            None => None,
        };
        let mode = if opts.training_ops {
            MatmulMode::Training
        } else {
            MatmulMode::Plain
        };
        let plan = LayerPlan {
            lora: opts.lora,
            dropout,
            full,
            local,
            spans,
            mode,
        };
        Ok((x, plan))
    }

    /// Layer `index` on `x` `[b, t, hidden]` (its input), appending to `cache` when given.
    pub fn run_layer(
        &self,
        index: usize,
        x: &Tensor,
        cache: Option<&mut LayerKv>,
        plan: &LayerPlan<'_>,
    ) -> Result<Tensor> {
        let Some(layer) = self.layers.get(index) else {
            candle_core::bail!("layer {index} of a model with {}", self.layers.len());
        };
        // A sliding layer reads its own tables and window; the others the full ones.
        let (tables, window) = match (self.config.style.layer_kind(index), &plan.local) {
            (LayerKind::Sliding, Some((w, local))) => (local, Some(*w)),
            _ => (&plan.full, None),
        };
        let ctx = LayerCtx {
            index,
            lora: plan.lora,
            dropout: plan.dropout,
            cos: &tables.cos,
            sin: &tables.sin,
            mask: tables.mask.as_ref(),
            spans: plan.spans.as_ref(),
            window,
            mode: plan.mode,
        };
        self.layer_forward(layer, x, cache, &ctx)
    }

    /// The final norm on the last layer's output.
    pub fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        self.norm.forward(x)
    }

    /// Logits `[n, vocab]` for hidden states `[n, hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden, None, None, MatmulMode::Plain)
    }

    /// Logits that autograd differentiates with respect to `hidden` only (training).
    pub fn logits_differentiable(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head
            .forward(hidden, None, None, MatmulMode::Training)
    }

    /// Logits of the last position of each row: `[b, vocab]`.
    pub fn last_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let (_, t, _) = hidden.dims3()?;
        let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?;
        self.logits(&last)
    }

    fn layer_forward(
        &self,
        l: &DecoderLayer,
        x: &Tensor,
        cache: Option<&mut LayerKv>,
        ctx: &LayerCtx<'_>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, t, _) = x.dims3()?;
        let lin = |lin: &Linear, target: LoraTarget, input: &Tensor| -> Result<Tensor> {
            let pair = ctx.lora.and_then(|s| s.get(ctx.index, target));
            let mask = match (pair, ctx.dropout) {
                (Some(_), Some((p, seed))) => {
                    let key = seed ^ ((ctx.index as u64) << 32) ^ ((target as u64) << 48);
                    Some(dropout_mask(input.dims(), p, key))
                }
                _ => None,
            };
            lin.forward(input, pair, mask.as_ref(), ctx.mode)
        };
        // Attention. The projections, rotary embedding and segment attention all keep the
        // token-major layout `[b, t, heads · d]`; only the dense path (a prompt continuing a
        // KV cache, a decode step) goes head-major.
        let residual = x;
        let xn = l.input_norm.forward(x)?;
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let q = lin(&l.q_proj, LoraTarget::QProj, &xn)?;
        let k = lin(&l.k_proj, LoraTarget::KProj, &xn)?;
        let v = lin(&l.v_proj, LoraTarget::VProj, &xn)?;
        let (q, k) = match (&l.q_norm, &l.k_norm) {
            (Some(qn), Some(kn)) => (
                qn.forward(&q.reshape((b, t, nh, hd))?)?
                    .reshape((b, t, nh * hd))?,
                kn.forward(&k.reshape((b, t, nkv, hd))?)?
                    .reshape((b, t, nkv * hd))?,
            ),
            _ => (q, k),
        };
        let scale = cfg.attention_scale();
        // `[b, t, heads · d]` -> `[b, heads, t, d]`, the KV cache's and dense path's layout.
        let head_major =
            |x: &Tensor, heads: usize| x.reshape((b, t, heads, hd))?.transpose(1, 2)?.contiguous();
        let attn = match ctx.spans {
            Some(spans) => {
                let q = rope::apply_token_major(&q, ctx.cos, ctx.sin, nh)?;
                let k = rope::apply_token_major(&k, ctx.cos, ctx.sin, nkv)?;
                if let Some(c) = cache {
                    // A prefill: the cache keeps K and V for the decode steps.
                    if b != 1 {
                        candle_core::bail!("a KV cache holds one sequence, not {b}");
                    }
                    c.append(&k.flatten_all()?.to_vec1()?, &v.flatten_all()?.to_vec1()?);
                }
                segment_attention::attention(&q, &k, &v, spans, (nh, nkv), scale, ctx.window)?
            }
            None => {
                let q = rope::apply(&head_major(&q, nh)?, ctx.cos, ctx.sin)?;
                let k = rope::apply(&head_major(&k, nkv)?, ctx.cos, ctx.sin)?;
                let v = head_major(&v, nkv)?;
                let (k, v) = match cache {
                    Some(c) => {
                        if b != 1 {
                            candle_core::bail!("a KV cache holds one sequence, not {b}");
                        }
                        // Back to token-major for the cache, then all of it head-major.
                        let token_major = |x: &Tensor| -> Result<Vec<f32>> {
                            x.transpose(1, 2)?.flatten_all()?.to_vec1()
                        };
                        c.append(&token_major(&k)?, &token_major(&v)?);
                        c.tensors(&self.device)?
                    }
                    None => (k, v),
                };
                // Group queries by their KV head instead of copying K and V per query
                // head: q [b, nh, t, d] -> [b, nkv, n_rep * t, d].
                let n_rep = nh / nkv;
                let q = q.reshape((b, nkv, n_rep * t, hd))?;
                let mut scores = (q.matmul(&k.t()?)? * scale)?;
                if let Some(m) = ctx.mask {
                    scores = scores.broadcast_add(m)?;
                }
                candle_nn::ops::softmax_last_dim(&scores)?
                    .matmul(&v)?
                    .reshape((b, nh, t, hd))?
                    .transpose(1, 2)?
                    .reshape((b, t, nh * hd))?
            }
        };
        let attn_out = lin(&l.o_proj, LoraTarget::OProj, &attn)?;
        let attn_out = match &l.attn_out_norm {
            Some(n) => n.forward(&attn_out)?,
            None => attn_out,
        };
        let x = (residual + attn_out)?;
        // MLP.
        let xn = l.pre_mlp_norm.forward(&x)?;
        let gate = lin(&l.gate_proj, LoraTarget::GateProj, &xn)?;
        let up = lin(&l.up_proj, LoraTarget::UpProj, &xn)?;
        let act = crate::ops::train_ops::gated(&gate, &up, cfg.style.activation)?;
        let down = lin(&l.down_proj, LoraTarget::DownProj, &act)?;
        let down = match &l.mlp_out_norm {
            Some(n) => n.forward(&down)?,
            None => down,
        };
        x + down
    }
}

/// What every layer of one forward call shares: the adapter, dropout, the rotary tables
/// and masks of each layer kind, how attention is laid out and how the linear layers
/// multiply.
pub struct LayerPlan<'a> {
    lora: Option<&'a LoraSet>,
    dropout: Option<(f32, u64)>,
    /// The full-attention layers' tables.
    full: KindTables,
    /// The sliding layers' window and tables, where any layer slides.
    local: Option<(usize, KindTables)>,
    spans: Option<segment_attention::Spans>,
    mode: MatmulMode,
}

/// The rotary tables of one layer kind for a call, and its additive mask on the dense path.
struct KindTables {
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
}

struct LayerCtx<'a> {
    index: usize,
    lora: Option<&'a LoraSet>,
    dropout: Option<(f32, u64)>,
    cos: &'a Tensor,
    sin: &'a Tensor,
    mask: Option<&'a Tensor>,
    /// Segments to attend within (whole sequences and packed rows), instead of `mask`.
    spans: Option<&'a segment_attention::Spans>,
    /// Keys a query sees on this (sliding) layer, itself included.
    window: Option<usize>,
    mode: MatmulMode,
}

/// The inverted-dropout mask of an input of shape `dims`, drawn from `seed` (see
/// [`DropoutMask`]: the same step always sees the same mask, for exact resumes).
pub fn dropout_mask(dims: &[usize], p: f32, seed: u64) -> DropoutMask {
    DropoutMask::draw(dims.iter().product(), p, seed)
}

/// Additive causal mask for `t` new queries after `offset` cached keys, tiled `n_rep` times
/// along the query axis to match the grouped query layout: `[n_rep * t, offset + t]`. With
/// a window, a query also loses the keys `window` or more positions before it.
fn causal_mask(
    t: usize,
    offset: usize,
    n_rep: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let total = offset + t;
    let mut data = Vec::with_capacity(n_rep * t * total);
    for _ in 0..n_rep {
        for i in 0..t {
            let q = offset + i;
            let first = window.map_or(0, |w| (q + 1).saturating_sub(w));
            for j in 0..total {
                data.push(if j > q || j < first {
                    f32::NEG_INFINITY
                } else {
                    0.0
                });
            }
        }
    }
    Tensor::from_vec(data, (n_rep * t, total), device)
}
