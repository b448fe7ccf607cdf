//! Gemma 3's fields of a Hugging Face `config.json` (`model_type: gemma3_text`), read into
//! a [`BlockStyle`] and the full-attention layers' RoPE base, and written back; with
//! transformers' defaults for the fields a config leaves out. Both the transformers 4
//! spelling (`rope_theta`, `rope_local_base_freq`, `rope_scaling`) and the transformers 5
//! one (`rope_parameters` per layer kind) are read.

use super::block_style::{BlockStyle, GateActivation, LayerKind, GEMMA3_SLIDING_PATTERN};
use super::config::{show, Architecture, JsonFields, ModelConfig};

/// What a Gemma 3 config adds to the common fields.
pub(super) struct Gemma3Fields {
    /// RoPE base of the full-attention layers.
    pub rope_theta: f32,
    pub style: BlockStyle,
}

/// transformers' `Gemma3TextConfig` defaults.
const DEFAULT_QUERY_PRE_ATTN_SCALAR: f64 = 256.0;
const DEFAULT_SLIDING_WINDOW: usize = 4096;
const DEFAULT_ROPE_THETA: f64 = 1_000_000.0;
const DEFAULT_LOCAL_ROPE_THETA: f64 = 10_000.0;

/// The RoPE base and linear factor of one `rope_parameters` / `rope_scaling` object, `key`
/// naming it; `theta` is `None` where it does not say.
fn rope_entry(v: &serde_json::Value, key: &str) -> Result<(Option<f64>, Option<f32>), String> {
    if !v.is_object() {
        return Err(format!("`{key}` is {}, expected an object", show(v)));
    }
    let theta = match v.get("rope_theta") {
        None | Some(serde_json::Value::Null) => None,
        Some(t) => Some(
            t.as_f64()
                .ok_or_else(|| format!("`{key}.rope_theta` is {}, expected a number", show(t)))?,
        ),
    };
    let kind = match v.get("rope_type").or_else(|| v.get("type")) {
        None | Some(serde_json::Value::Null) => "default",
        Some(t) => t
            .as_str()
            .ok_or_else(|| format!("`{key}.rope_type` is {}, expected a string", show(t)))?,
    };
    let factor = match kind {
        "default" => None,
        "linear" => {
            let f = v
                .get("factor")
                .ok_or_else(|| format!("`{key}` of type linear lacks `factor`"))?;
            let f = f
                .as_f64()
                .ok_or_else(|| format!("`{key}.factor` is {}, expected a number", show(f)))?;
            // A factor of one is no scaling (Gemma 3 1B's GGUF files state it).
            (f != 1.0).then_some(f as f32)
        }
        other => {
            return Err(format!(
                "`{key}` type `{other}` is not supported for Gemma 3 (supported: default, linear)"
            ))
        }
    };
    Ok((theta, factor))
}

/// Reads Gemma 3's own fields of a config of `layers` layers.
pub(super) fn read_hf(fields: &JsonFields<'_>, layers: usize) -> Result<Gemma3Fields, String> {
    let mut style = BlockStyle::for_architecture(Architecture::Gemma3);
    let act_key = if fields.get("hidden_activation").is_some() {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    match fields.string(act_key)? {
        None | Some("gelu_pytorch_tanh") | Some("gelu_new") => {
            style.activation = GateActivation::GeluTanh
        }
        Some(other) => {
            return Err(format!(
                "`{act_key}` is `{other}`; Gemma 3 is supported with the tanh-approximated GELU (gelu_pytorch_tanh)"
            ))
        }
    }
    for key in ["final_logit_softcapping", "attn_logit_softcapping"] {
        if let Some(v) = fields.get(key) {
            return Err(format!(
                "`{key}` is {}; soft-capping (Gemma 2) is not supported, Gemma 3 sets it to null",
                show(v)
            ));
        }
    }
    if fields.flag("use_bidirectional_attention")? == Some(true) {
        return Err(
            "`use_bidirectional_attention` is true (an embedding model); only causal Gemma 3 is supported"
                .into(),
        );
    }
    style.query_pre_attn_scalar = Some(
        fields
            .float("query_pre_attn_scalar")?
            .unwrap_or(DEFAULT_QUERY_PRE_ATTN_SCALAR),
    );
    style.sliding_window = Some(
        fields
            .count("sliding_window")?
            .unwrap_or(DEFAULT_SLIDING_WINDOW),
    );
    style.layer_types = match fields.get("layer_types") {
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().and_then(LayerKind::from_hf_name).ok_or_else(|| {
                    format!(
                        "`layer_types[{i}]` is {}, expected \"sliding_attention\" or \"full_attention\"",
                        show(v)
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(format!("`layer_types` is {}, expected a list", show(v))),
        None => {
            let pattern = fields
                .count("sliding_window_pattern")?
                .unwrap_or(GEMMA3_SLIDING_PATTERN);
            BlockStyle::pattern_layers(layers, pattern)
        }
    };
    let (mut theta, mut local_theta, mut factor) = (
        fields.float("rope_theta")?,
        fields.float("rope_local_base_freq")?,
        None,
    );
    if let Some(v) = fields.get("rope_scaling") {
        factor = rope_entry(v, "rope_scaling")?.1;
    }
    if let Some(p) = fields.get("rope_parameters") {
        let kinds = ["full_attention", "sliding_attention"];
        if p.is_object() && kinds.iter().any(|k| p.get(k).is_some()) {
            if let Some(full) = p.get("full_attention") {
                let (t, f) = rope_entry(full, "rope_parameters.full_attention")?;
                theta = theta.or(t);
                factor = factor.or(f);
            }
            if let Some(local) = p.get("sliding_attention") {
                let (t, f) = rope_entry(local, "rope_parameters.sliding_attention")?;
                if f.is_some() {
                    return Err(
                        "`rope_parameters.sliding_attention` scales RoPE; only the full-attention layers may"
                            .into(),
                    );
                }
                local_theta = local_theta.or(t);
            }
        } else {
            let (t, f) = rope_entry(p, "rope_parameters")?;
            theta = theta.or(t);
            factor = factor.or(f);
        }
    }
    style.rope_local_theta = Some(local_theta.unwrap_or(DEFAULT_LOCAL_ROPE_THETA) as f32);
    style.rope_linear_factor = factor;
    Ok(Gemma3Fields {
        rope_theta: theta.unwrap_or(DEFAULT_ROPE_THETA) as f32,
        style,
    })
}

/// Writes Gemma 3's fields into `v`, a `config.json` object, in transformers 4's spelling
/// (which transformers 5 also reads).
pub(super) fn write_hf(cfg: &ModelConfig, v: &mut serde_json::Value) {
    let s = &cfg.style;
    v["hidden_activation"] = "gelu_pytorch_tanh".into();
    v["hidden_act"] = "gelu_pytorch_tanh".into();
    if let Some(q) = s.query_pre_attn_scalar {
        v["query_pre_attn_scalar"] = q.into();
    }
    if let Some(w) = s.sliding_window {
        v["sliding_window"] = w.into();
    }
    v["layer_types"] = (0..cfg.num_hidden_layers)
        .map(|i| s.layer_kind(i).hf_name())
        .collect::<Vec<_>>()
        .into();
    if let Some(t) = s.rope_local_theta {
        v["rope_local_base_freq"] = t.into();
    }
    v["rope_scaling"] = match s.rope_linear_factor {
        Some(f) => serde_json::json!({"rope_type": "linear", "factor": f}),
        None => serde_json::Value::Null,
    };
    v["final_logit_softcapping"] = serde_json::Value::Null;
    v["attn_logit_softcapping"] = serde_json::Value::Null;
}

#[cfg(test)]
mod tests {
    use crate::model::config::{Architecture, LayerKind, ModelConfig};

    /// google/gemma-3-270m's config.json (transformers 4 spelling).
    const GEMMA3_270M: &str = r#"{"architectures":["Gemma3ForCausalLM"],"attention_bias":false,
        "attn_logit_softcapping":null,"bos_token_id":2,"eos_token_id":1,"final_logit_softcapping":null,
        "head_dim":256,"hidden_activation":"gelu_pytorch_tanh","hidden_size":640,
        "intermediate_size":2048,"layer_types":["sliding_attention","sliding_attention",
        "sliding_attention","sliding_attention","sliding_attention","full_attention",
        "sliding_attention","sliding_attention","sliding_attention","sliding_attention",
        "sliding_attention","full_attention","sliding_attention","sliding_attention",
        "sliding_attention","sliding_attention","sliding_attention","full_attention"],
        "max_position_embeddings":32768,"model_type":"gemma3_text","num_attention_heads":4,
        "num_hidden_layers":18,"num_key_value_heads":1,"pad_token_id":0,"query_pre_attn_scalar":256,
        "rms_norm_eps":1e-06,"rope_local_base_freq":10000.0,"rope_scaling":null,
        "rope_theta":1000000.0,"sliding_window":512,"use_bidirectional_attention":false,
        "vocab_size":262144}"#;

    #[test]
    fn reads_gemma3_270m_and_writes_it_back() {
        let c = ModelConfig::from_hf_json(GEMMA3_270M, "config.json").unwrap();
        assert_eq!(c.architecture, Architecture::Gemma3);
        assert!(c.tie_word_embeddings);
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.style.rope_local_theta, Some(10_000.0));
        assert_eq!(c.style.sliding_window, Some(512));
        assert_eq!(c.style.layer_kind(5), LayerKind::Full);
        assert_eq!(c.style.layer_kind(4), LayerKind::Sliding);
        assert!(c.style.sandwich_norms && c.style.qk_norm && c.style.scale_embeddings);
        let back = ModelConfig::from_hf_json(&c.to_hf_json().to_string(), "x").unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn transformers5_rope_parameters_per_layer_kind() {
        let text = r#"{"model_type":"gemma3_text","vocab_size":300,"hidden_size":64,
            "intermediate_size":128,"num_hidden_layers":6,"num_attention_heads":2,
            "num_key_value_heads":1,"head_dim":32,"sliding_window":16,
            "rope_parameters":{"full_attention":{"rope_type":"linear","factor":8.0,
            "rope_theta":1000000.0},"sliding_attention":{"rope_type":"default","rope_theta":10000.0}}}"#;
        let c = ModelConfig::from_hf_json(text, "config.json").unwrap();
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.style.rope_linear_factor, Some(8.0));
        assert_eq!(c.style.rope_local_theta, Some(1e4));
        // No layer_types: every sixth layer is global.
        assert_eq!(c.style.layer_kind(5), LayerKind::Full);
        assert_eq!(c.style.layer_kind(0), LayerKind::Sliding);
    }

    #[test]
    fn unsupported_gemma_fields_are_named() {
        let with = |extra: &str| {
            let text = format!(
                r#"{{"model_type":"gemma3_text","vocab_size":300,"hidden_size":64,
                "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":2,
                "num_key_value_heads":1,"head_dim":32{extra}}}"#
            );
            ModelConfig::from_hf_json(&text, "/m/config.json")
                .unwrap_err()
                .to_string()
        };
        let e = with(r#","final_logit_softcapping":30.0"#);
        assert!(
            e.contains("/m/config.json") && e.contains("final_logit_softcapping"),
            "{e}"
        );
        let e = with(r#","hidden_activation":"relu""#);
        assert!(e.contains("hidden_activation"), "{e}");
        let e = with(r#","layer_types":["sliding_attention","diagonal"]"#);
        assert!(e.contains("layer_types[1]"), "{e}");
        let e = with(r#","layer_types":["full_attention"]"#);
        assert!(e.contains("lists 1 layers"), "{e}");
        let e = with(r#","sliding_window":0"#);
        assert!(e.contains("sliding_window is 0"), "{e}");
        let e = with(r#","rope_scaling":{"rope_type":"yarn","factor":4.0}"#);
        assert!(e.contains("yarn"), "{e}");
    }
}
