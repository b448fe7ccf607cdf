//! Gemma 3's pieces on a tiny random model (window of 5 on its first layer, a full second
//! layer with its own RoPE base, an attention scalar unlike the head dim): the training
//! path's logits and LoRA gradients against an independent composition of plain candle ops
//! differentiated by candle's autograd, KV-cache decoding (prefill, a chunk through the
//! dense mask, single steps) across the window against one forward, packed rows, the
//! trainer's loss falling, and the merged Hugging Face folder loading back the same.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var, D};
use finetune_studio::model::config::{Architecture, LayerKind};
use finetune_studio::model::lora::{LoraSet, LoraTarget};
use finetune_studio::model::transformer::{RmsNorm, Transformer};
use finetune_studio::model::{self, Cache, Forward, Layout, Model};
use finetune_studio::testkit::{write_echo_dataset, write_tiny_model};

fn tiny() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_model(dir.path(), Architecture::Gemma3, 7).unwrap();
    let m = model::load_hf_folder(&path, &Device::Cpu).unwrap();
    let s = &m.config().style;
    assert_eq!(s.sliding_window, Some(5));
    assert_eq!(s.layer_kind(0), LayerKind::Sliding);
    assert_eq!(s.layer_kind(1), LayerKind::Full);
    (dir, m)
}

type Vars = BTreeMap<(usize, LoraTarget), (Var, Var)>;

/// LoRA pairs of rank 2 on every linear layer, B non-zero so that A gets a gradient.
fn lora_vars(m: &Transformer) -> Vars {
    let mut vars = Vars::new();
    let mut seed = 100;
    for (i, l) in m.layers.iter().enumerate() {
        for t in LoraTarget::ALL {
            let lin = l.linear(t);
            let (out, inp) = (lin.out_features(), lin.in_features());
            let mut uniform = |shape: (usize, usize)| {
                seed += 1;
                let t = Tensor::rand(-0.2f32, 0.2, shape, &Device::Cpu).unwrap();
                // A fixed, seed-dependent offset keeps the pairs distinct.
                (t + (seed as f64 * 1e-3)).unwrap()
            };
            let a = Var::from_tensor(&uniform((2, inp))).unwrap();
            let b = Var::from_tensor(&uniform((out, 2))).unwrap();
            vars.insert((i, t), (a, b));
        }
    }
    vars
}

const LORA_SCALE: f64 = 1.5;

/// `x / √(mean(x²) + eps) · w` over the last dimension, composed.
fn rms(x: &Tensor, n: &RmsNorm) -> Tensor {
    let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    x.broadcast_div(&(ms + n.eps as f64).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&n.weight)
        .unwrap()
}

/// Rotary embedding in the `rotate_half` layout, `x [heads, t, d]`, with the base given.
fn rope(x: &Tensor, base: f64) -> Tensor {
    let (_, t, d) = x.dims3().unwrap();
    let inv: Vec<f32> = (0..d / 2)
        .map(|i| (1.0 / base.powf(2.0 * i as f64 / d as f64)) as f32)
        .collect();
    let angles: Vec<f32> = (0..t)
        .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
        .collect();
    let a = Tensor::from_vec(angles, (t, d / 2), &Device::Cpu).unwrap();
    let a = Tensor::cat(&[&a, &a], 1).unwrap();
    let (cos, sin) = (a.cos().unwrap(), a.sin().unwrap());
    let x1 = x.narrow(2, 0, d / 2).unwrap();
    let x2 = x.narrow(2, d / 2, d / 2).unwrap();
    let rotated = Tensor::cat(&[&x2.neg().unwrap(), &x1], 2).unwrap();
    (x.broadcast_mul(&cos).unwrap() + rotated.broadcast_mul(&sin).unwrap()).unwrap()
}

/// The tanh-approximated GELU, written out.
fn gelu_tanh(x: &Tensor) -> Tensor {
    let c = (2.0f64 / std::f64::consts::PI).sqrt();
    let inner = ((x + (x.powf(3.0).unwrap() * 0.044715).unwrap()).unwrap() * c).unwrap();
    ((x * 0.5).unwrap() * (inner.tanh().unwrap() + 1.0).unwrap()).unwrap()
}

/// Gemma 3 written from its definition (transformers' `Gemma3ForCausalLM`) with plain candle
/// ops: logits `[t, vocab]` of one sequence, the adapter on every linear layer.
fn composed(m: &Transformer, ids: &[u32], vars: &Vars) -> Tensor {
    let cfg = &m.config;
    let dev = Device::Cpu;
    let (nh, nkv, hd) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    let t = ids.len();
    let emb = m.embed_tokens.to_f32(&dev).unwrap();
    let idx = Tensor::new(ids, &dev).unwrap();
    let mut x = (emb.index_select(&idx, 0).unwrap() * (cfg.hidden_size as f64).sqrt()).unwrap();
    let lin = |i: usize, target: LoraTarget, x: &Tensor| -> Tensor {
        let w = m.layers[i].linear(target).weight.to_f32(&dev).unwrap();
        let (a, b) = &vars[&(i, target)];
        let base = x.matmul(&w.t().unwrap()).unwrap();
        let delta = x
            .matmul(&a.as_tensor().t().unwrap())
            .unwrap()
            .matmul(&b.as_tensor().t().unwrap())
            .unwrap();
        (base + (delta * LORA_SCALE).unwrap()).unwrap()
    };
    let heads = |x: &Tensor, n: usize| -> Tensor {
        x.reshape((t, n, hd))
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    for (i, l) in m.layers.iter().enumerate() {
        let sliding = cfg.style.layer_kind(i) == LayerKind::Sliding;
        let base = if sliding {
            cfg.style.rope_local_theta.unwrap() as f64
        } else {
            cfg.rope_theta as f64
        };
        let xn = rms(&x, &l.input_norm);
        let q = rms(
            &heads(&lin(i, LoraTarget::QProj, &xn), nh),
            l.q_norm.as_ref().unwrap(),
        );
        let k = rms(
            &heads(&lin(i, LoraTarget::KProj, &xn), nkv),
            l.k_norm.as_ref().unwrap(),
        );
        let v = heads(&lin(i, LoraTarget::VProj, &xn), nkv);
        let (q, k) = (rope(&q, base), rope(&k, base));
        let rep: Vec<u32> = (0..nh).map(|h| (h / (nh / nkv)) as u32).collect();
        let rep = Tensor::new(rep, &dev).unwrap();
        let (k, v) = (
            k.index_select(&rep, 0).unwrap(),
            v.index_select(&rep, 0).unwrap(),
        );
        let window = if sliding {
            cfg.style.sliding_window.unwrap()
        } else {
            usize::MAX
        };
        let mask: Vec<f32> = (0..t)
            .flat_map(|qi| {
                (0..t).map(move |ki| {
                    if ki <= qi && qi - ki < window {
                        0.0
                    } else {
                        -1e9
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (1, t, t), &dev).unwrap();
        let scale = 1.0 / cfg.style.query_pre_attn_scalar.unwrap().sqrt();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale)
            .unwrap()
            .broadcast_add(&mask)
            .unwrap();
        let p = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        let attn = p
            .matmul(&v)
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .reshape((t, nh * hd))
            .unwrap();
        let o = rms(
            &lin(i, LoraTarget::OProj, &attn),
            l.attn_out_norm.as_ref().unwrap(),
        );
        x = (x + o).unwrap();
        let xn = rms(&x, &l.pre_mlp_norm);
        let gate = lin(i, LoraTarget::GateProj, &xn);
        let up = lin(i, LoraTarget::UpProj, &xn);
        let act = (gelu_tanh(&gate) * up).unwrap();
        let down = rms(
            &lin(i, LoraTarget::DownProj, &act),
            l.mlp_out_norm.as_ref().unwrap(),
        );
        x = (x + down).unwrap();
    }
    rms(&x, &m.norm).matmul(&emb.t().unwrap()).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// The training path (the hand-written backward of every op) against autograd through
/// the composition: logits, and every LoRA gradient, within 1e-4.
#[test]
fn training_path_matches_autograd_through_the_composed_model() {
    let (_d, m) = tiny();
    let t = &m.transformer;
    let vars = lora_vars(t);
    let ids: Vec<u32> = vec![257, 40, 41, 42, 43, 44, 45, 46, 47, 48, 258];
    let probe = Tensor::rand(-1f32, 1.0, (ids.len(), t.config.vocab_size), &Device::Cpu).unwrap();

    let want = composed(t, &ids, &vars);
    let want_grads = (&want * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();

    let lora = LoraSet::from_vars(&vars, LORA_SCALE, 0.0);
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let h = t
        .forward(
            &input,
            Forward {
                lora: Some(&lora),
                training_ops: true,
                ..Default::default()
            },
        )
        .unwrap();
    let got = t.logits_differentiable(&h.squeeze(0).unwrap()).unwrap();
    let logit_diff = common::max_abs_diff(&got, &want);
    assert!(logit_diff < 1e-4, "logits differ by {logit_diff}");
    let got_grads = (&got * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut checked = 0;
    for (key, (a, b)) in &vars {
        for (v, which) in [(a, "A"), (b, "B")] {
            let grad = |store: &candle_core::backprop::GradStore, path: &str| {
                let g = store.get(v.as_tensor());
                flat(g.unwrap_or_else(|| panic!("{path}: no gradient for {key:?} {which}")))
            };
            let g1 = grad(&got_grads, "training path");
            let g2 = grad(&want_grads, "composed");
            let scale = g2.iter().fold(0f32, |m, x| m.max(x.abs())).max(1.0);
            let worst = g1
                .iter()
                .zip(&g2)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                worst < 1e-4 * scale,
                "{key:?} {which}: gradient differs by {worst} (largest {scale})"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * 7 * t.layers.len());
}

/// Prefill of 4 tokens, a chunk of 3 through the dense windowed mask, then single decode
/// steps: 12 positions, past the window of 5, equal to one forward over all of them.
#[test]
fn cached_decode_across_the_window_equals_full_forward() {
    let (_d, m) = tiny();
    let ids: Vec<u32> = vec![257, 10, 72, 101, 108, 108, 111, 33, 258, 12, 90, 91];
    let full = common::logits(&m, None, None, &ids);
    let mut cache = Cache::new(m.config());
    let mut rows = vec![
        common::logits(&m, None, Some(&mut cache), &ids[..4]),
        common::logits(&m, None, Some(&mut cache), &ids[4..7]),
    ];
    for &id in &ids[7..] {
        rows.push(common::logits(&m, None, Some(&mut cache), &[id]));
    }
    let stepwise = Tensor::cat(&rows, 0).unwrap();
    let diff = common::max_abs_diff(&full, &stepwise);
    assert!(diff < 1e-4, "cached decode differs by {diff}");
    // The window matters: without it (every layer full) the logits move.
    let mut unwindowed = m.clone();
    unwindowed.transformer.config.style.layer_types = vec![LayerKind::Full; 2];
    let moved = common::max_abs_diff(&full, &common::logits(&unwindowed, None, None, &ids));
    assert!(moved > 1e-3, "the window changed nothing ({moved})");
}

#[test]
fn packed_rows_longer_than_the_window_match_separate_sequences() {
    let (_d, m) = tiny();
    let a = [257u32, 5, 6, 7, 8, 9, 10, 11];
    let b = [257u32, 9, 10, 11, 12, 13, 14];
    let sep_a = common::logits(&m, None, None, &a);
    let sep_b = common::logits(&m, None, None, &b);
    let row: Vec<u32> = a.iter().chain(&b).copied().collect();
    let positions: Vec<u32> = (0..a.len() as u32).chain(0..b.len() as u32).collect();
    let segments: Vec<u32> = [0u32; 8].iter().chain(&[1u32; 7]).copied().collect();
    let tensor = |v: Vec<u32>| {
        Tensor::new(v.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
    };
    let h = m
        .transformer
        .forward(
            &tensor(row),
            Forward {
                layout: Layout::Packed {
                    positions: tensor(positions),
                    segments: tensor(segments),
                },
                ..Default::default()
            },
        )
        .unwrap();
    let packed = m.transformer.logits(&h.squeeze(0).unwrap()).unwrap();
    assert!(common::max_abs_diff(&packed.narrow(0, 0, 8).unwrap(), &sep_a) < 1e-4);
    assert!(common::max_abs_diff(&packed.narrow(0, 8, 7).unwrap(), &sep_b) < 1e-4);
}

/// A merged folder keeps the checkpoint's `w` of the `(1 + w)` norms and Gemma's norm
/// names: it loads back with the same logits.
#[test]
fn the_merged_folder_loads_back() {
    let (dir, m) = tiny();
    let out = dir.path().join("merged");
    finetune_studio::export::merge::write_hf_folder(&m, &out).unwrap();
    let back = model::load_hf_folder(&out, &Device::Cpu).unwrap();
    assert_eq!(back.config(), m.config());
    let ids = [257u32, 40, 41, 42, 43, 44, 45, 46];
    let diff = common::max_abs_diff(
        &common::logits(&m, None, None, &ids),
        &common::logits(&back, None, None, &ids),
    );
    assert!(diff < 1e-5, "merged folder logits differ by {diff}");
}

/// GGUF as llama.cpp writes Gemma 3 (its tensor names, norms holding `1 + w`, the window
/// key) loads back with the same config and logits; a style llama.cpp cannot express (its
/// layer kinds or attention scalar fixed by the shapes) is refused, naming the field.
#[test]
fn gguf_export_round_trips_what_llama_cpp_can_express() {
    use finetune_studio::export::gguf::{write_gguf, GgufType};
    let (dir, mut m) = tiny();
    let path = dir.path().join("g.gguf");
    let err = write_gguf(&m, &path, GgufType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer kinds") && err.contains("g.gguf"),
        "{err}"
    );
    // Every sixth layer global: both layers of two slide.
    m.transformer.config.style.layer_types = vec![LayerKind::Sliding; 2];
    let err = write_gguf(&m, &path, GgufType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("query_pre_attn_scalar"), "{err}");
    m.transformer.config.style.query_pre_attn_scalar = Some(m.config().head_dim as f64);
    write_gguf(&m, &path, GgufType::F32).unwrap();
    let g = model::load_gguf(&path, &Device::Cpu).unwrap();
    let (mut want, mut got) = (m.config().clone(), g.config().clone());
    // GGUF keeps no BOS/EOS beyond the tokenizer's and no context beyond its key.
    (want.bos_token_id, got.bos_token_id) = (None, None);
    (want.eos_token_ids, got.eos_token_ids) = (vec![], vec![]);
    // The epsilon travels as f32.
    assert!((got.rms_norm_eps - want.rms_norm_eps).abs() < 1e-12);
    got.rms_norm_eps = want.rms_norm_eps;
    assert_eq!(got, want);
    let ids = [257u32, 40, 41, 42, 43, 44, 45, 46];
    let diff = common::max_abs_diff(
        &common::logits(&m, None, None, &ids),
        &common::logits(&g, None, None, &ids),
    );
    assert!(diff < 1e-4, "GGUF logits differ by {diff}");
}

/// The trainer on the tiny Gemma: the loss falls on the echo set.
#[test]
fn the_trainer_lowers_the_loss() {
    use finetune_studio::train::trainer::{self, Control, Start};
    use finetune_studio::train::{TrainCommand, TrainEvent};

    struct Losses(Vec<f64>);
    impl Control for Losses {
        fn send(&mut self, event: TrainEvent) {
            if let TrainEvent::Step(m) = event {
                self.0.push(m.loss);
            }
        }
        fn poll(&mut self) -> Option<TrainCommand> {
            None
        }
        fn wait(&mut self) -> Option<TrainCommand> {
            Some(TrainCommand::Resume)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mdir = write_tiny_model(&dir.path().join("model"), Architecture::Gemma3, 11).unwrap();
    let model = Arc::new(model::load_hf_folder(&mdir, &Device::Cpu).unwrap());
    let data = write_echo_dataset(dir.path()).unwrap();
    let mut cfg = common::tiny_run_config(&mdir, data, dir.path().join("runs"));
    cfg.training.max_steps = Some(30);
    cfg.training.eval_every = 0;
    let mut rec = Losses(Vec::new());
    trainer::run(cfg, model, Start::Fresh, None, &mut rec).unwrap();
    let l = &rec.0;
    assert_eq!(l.len(), 30);
    let first = l[..4].iter().sum::<f64>() / 4.0;
    let last = l[26..].iter().sum::<f64>() / 4.0;
    assert!(
        last < 0.6 * first,
        "loss did not fall enough: {first} -> {last}"
    );
}
