//! Weight sources: named f32 tensors in Hugging Face naming, read from safetensors
//! (single file or sharded index, f32/f16/bf16) or from a GGUF file (dequantized, names
//! mapped, llama.cpp's Q/K row permutation undone).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};

use super::linear::FrozenWeight;
use super::ModelError;

/// Something that hands out the model's tensors by their Hugging Face names.
pub trait WeightSource {
    /// The tensor `name` as f32, checked against `shape`.
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError>;
    /// The matrix `name` as the source stores it (quantized blocks stay blocks), checked
    /// against `shape`; f32 where the source has nothing better.
    fn get_frozen(&mut self, name: &str, shape: &[usize]) -> Result<FrozenWeight, ModelError> {
        Ok(FrozenWeight::F32(self.get(name, shape)?))
    }
    fn contains(&self, name: &str) -> bool;
    /// The file, for messages.
    fn path(&self) -> &Path;
    /// Whether the norm weights of a `(1 + w)`-norm model (Gemma) are stored as `1 + w`
    /// already, as llama.cpp's converter writes them; Hugging Face checkpoints store `w`.
    fn norms_hold_unit_offset(&self) -> bool {
        false
    }
}

fn check_dims(found: &[usize], name: &str, shape: &[usize], path: &Path) -> Result<(), ModelError> {
    if found != shape {
        return Err(ModelError::weights(
            path,
            format!(
                "tensor `{name}` has shape {found:?} but the config implies {shape:?}: the config does not match the weights"
            ),
        ));
    }
    Ok(())
}

fn check_shape(t: Tensor, name: &str, shape: &[usize], path: &Path) -> Result<Tensor, ModelError> {
    check_dims(t.dims(), name, shape, path)?;
    Ok(t)
}

/// Refuses PyTorch pickles before anything reads them.
pub fn refuse_pickle(path: &Path) -> Result<(), ModelError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if matches!(ext, "bin" | "pt" | "pth" | "ckpt" | "pkl") {
        return Err(ModelError::Pickle { path: path.into() });
    }
    Ok(())
}

/// Memory-mapped safetensors files.
pub struct SafetensorsSource {
    files: candle_core::safetensors::MmapedSafetensors,
    names: std::collections::HashSet<String>,
    path: PathBuf,
    device: Device,
}

impl SafetensorsSource {
    /// Opens `model.safetensors`, or every shard listed in `model.safetensors.index.json`.
    pub fn open(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let shards: Vec<PathBuf> = if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
            let index: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::weights(path, format!("invalid index JSON: {e}")))?;
            let map = index
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::weights(path, "index has no `weight_map` object"))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            let mut files = Vec::new();
            for v in map.values() {
                let name = v.as_str().ok_or_else(|| {
                    ModelError::weights(path, format!("`weight_map` value {v} is not a file name"))
                })?;
                // Shards sit next to the index: no absolute paths, no `..`.
                let plain = Path::new(name).file_name().is_some_and(|f| f == name);
                if !plain {
                    return Err(ModelError::weights(
                        path,
                        format!("`weight_map` names `{name}`, which is not a file in the model's folder"),
                    ));
                }
                files.push(dir.join(name));
            }
            files.sort();
            files.dedup();
            files
        } else {
            vec![path.to_path_buf()]
        };
        for f in &shards {
            if !f.exists() {
                return Err(ModelError::weights(
                    f,
                    "shard listed in the index is missing",
                ));
            }
        }
        let files = crate::ops::mmap::map_safetensors(&shards).map_err(|e| {
            ModelError::weights(path, format!("not a readable safetensors file: {e}"))
        })?;
        let names = files.tensors().into_iter().map(|(n, _)| n).collect();
        Ok(Self {
            files,
            names,
            path: path.to_path_buf(),
            device: device.clone(),
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.names.iter()
    }
}

impl WeightSource for SafetensorsSource {
    /// f16 and bf16 matrices stay 16-bit (copied out of the mapping, which closes after
    /// loading); f32 ones are tensors.
    fn get_frozen(&mut self, name: &str, shape: &[usize]) -> Result<FrozenWeight, ModelError> {
        use crate::ops::quant::{QuantMatrix, StoredType};
        let view = self
            .names
            .contains(name)
            .then(|| self.files.get(name).ok())
            .flatten();
        let ty = view.as_ref().and_then(|v| match v.dtype() {
            safetensors::Dtype::F16 => Some(StoredType::F16),
            safetensors::Dtype::BF16 => Some(StoredType::BF16),
            _ => None,
        });
        match (view, ty, shape) {
            (Some(view), Some(ty), [rows, cols]) => {
                check_dims(view.shape(), name, shape, &self.path)?;
                let m =
                    QuantMatrix::owned(view.data().to_vec(), ty, *rows, *cols).map_err(|e| {
                        ModelError::weights(&self.path, format!("tensor `{name}`: {e}"))
                    })?;
                Ok(FrozenWeight::Stored(std::sync::Arc::new(m)))
            }
            _ => Ok(FrozenWeight::F32(self.get(name, shape)?)),
        }
    }
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        if !self.names.contains(name) {
            return Err(ModelError::weights(
                &self.path,
                format!("tensor `{name}` is missing"),
            ));
        }
        let err = |e: &dyn std::fmt::Display| {
            ModelError::weights(&self.path, format!("tensor `{name}`: {e}"))
        };
        let view = self.files.get(name).map_err(|e| err(&e))?;
        // The header's shapes, dtypes and offsets are checked against each other and the
        // file by the safetensors crate when the file is opened; what is left is whether
        // they are what the config expects.
        check_dims(view.shape(), name, shape, &self.path)?;
        use safetensors::Dtype;
        let bytes_per_element = match view.dtype() {
            Dtype::F32 => 4usize,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(err(&format!(
                    "dtype {other:?} is not a floating-point weight type this studio reads (F32, F16, BF16)"
                )))
            }
        };
        let expected_bytes = shape
            .iter()
            .try_fold(bytes_per_element, |n, &d| n.checked_mul(d));
        if expected_bytes != Some(view.data().len()) {
            return Err(err(&format!(
                "holds {} bytes, not the {} its shape {shape:?} and dtype {:?} take",
                view.data().len(),
                expected_bytes.map_or("(overflowing)".to_string(), |n| n.to_string()),
                view.dtype()
            )));
        }
        let t = self
            .files
            .load(name, &self.device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| err(&e))?;
        check_shape(t, name, shape, &self.path)
    }
    fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// Maps a Hugging Face tensor name to llama.cpp's GGUF name.
pub fn hf_to_gguf_name(name: &str) -> Option<String> {
    hf_to_gguf_name_in(name, false)
}

/// [`hf_to_gguf_name`] for a model with `sandwich` norms (Gemma), whose
/// `post_attention_layernorm` is the norm of the attention output (`post_attention_norm`)
/// and whose norm before the MLP is `pre_feedforward_layernorm` (`ffn_norm`).
pub fn hf_to_gguf_name_in(name: &str, sandwich: bool) -> Option<String> {
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let mapped = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" if sandwich => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" if sandwich => "ffn_norm",
        "post_feedforward_layernorm" if sandwich => "post_ffw_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{mapped}.{suffix}"))
}

/// The `[heads, half, 2, ..]`-style split of a Q or K weight's rows, or an error when
/// the rows are not `heads` whole heads of even size.
fn qk_split(dims: &[usize], heads: usize) -> candle_core::Result<(usize, Vec<usize>)> {
    let Some((&rows, rest)) = dims.split_first() else {
        candle_core::bail!("cannot split a scalar into heads")
    };
    if heads == 0 || rows % (2 * heads) != 0 {
        candle_core::bail!("{rows} rows do not split into {heads} heads of even size")
    }
    Ok((rows / heads / 2, rest.to_vec()))
}

/// llama.cpp's row permutation of Q and K for its rotary layout, undone:
/// `[heads, 2, d/2, ...] <- [heads, d/2, 2, ...]`.
pub fn unpermute_qk(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let (half, rest) = qk_split(&dims, heads)?;
    let mut shape = vec![heads, half, 2];
    shape.extend(&rest);
    t.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// The inverse of [`unpermute_qk`], applied when writing GGUF.
pub fn permute_qk(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let (half, rest) = qk_split(&dims, heads)?;
    let mut shape = vec![heads, 2, half];
    shape.extend(&rest);
    t.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// Checks every tensor a GGUF header lists against the file before any is read: at most
/// four dimensions, an element count that does not overflow, a last dimension (ggml's
/// rows) that is a whole number of its type's blocks, and a byte range (data offset +
/// tensor offset + its size) that lies inside the file. Tensors are refused by name.
pub fn check_gguf_tensors(
    content: &gguf_file::Content,
    file_len: u64,
    path: &Path,
) -> Result<(), ModelError> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let info = &content.tensor_infos[name];
        let bad = |m: String| ModelError::weights(path, format!("tensor `{name}`: {m}"));
        let dims = info.shape.dims();
        let dtype = info.ggml_dtype;
        let block = dtype.block_size();
        if dims.len() > 4 {
            return Err(bad(format!(
                "{} dimensions, at most 4 are allowed",
                dims.len()
            )));
        }
        let elems = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("shape {dims:?} has more elements than any file")))?;
        if let Some(&row) = dims.last() {
            if row % block != 0 {
                return Err(bad(format!(
                    "rows of {row} elements are not whole {dtype:?} blocks of {block}"
                )));
            }
        }
        let bytes = (elems / block as u64)
            .checked_mul(dtype.type_size() as u64)
            .ok_or_else(|| bad(format!("shape {dims:?} needs more bytes than any file")))?;
        let start = content.tensor_data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                let remaining = start.map_or(0, |s| file_len.saturating_sub(s));
                return Err(bad(format!(
                    "{dtype:?} {dims:?} needs {bytes} bytes at offset {} + {}, only {remaining} remaining in the {file_len}-byte file (truncated or corrupt)",
                    content.tensor_data_offset, info.offset
                )));
            }
        }
    }
    Ok(())
}

/// An opened GGUF file.
pub struct GgufSource {
    pub content: gguf_file::Content,
    reader: BufReader<File>,
    /// The whole file, mapped: quantized matrices are read from it in place.
    map: std::sync::Arc<memmap2::Mmap>,
    path: PathBuf,
    device: Device,
    /// Heads for un-permuting Q and K (llama-architecture files only).
    pub qk_heads: Option<(usize, usize)>,
    /// Gemma's tensor names and norms: four norms per block, named as
    /// [`hf_to_gguf_name_in`] maps them, holding `1 + w`.
    pub gemma: bool,
}

/// Reads a GGUF file's header (metadata and tensor infos) after checking its magic and
/// version: versions 2 and 3 only. Version 1 (32-bit lengths, dropped by llama.cpp in
/// 2023) is refused before candle's reader, which would read its lengths as given.
pub fn read_gguf_content(
    reader: &mut BufReader<File>,
    path: &Path,
) -> Result<gguf_file::Content, ModelError> {
    use std::io::{Read, Seek};
    let mut head = [0u8; 8];
    reader
        .read_exact(&mut head)
        .map_err(|e| ModelError::weights(path, format!("not a GGUF file: {e}")))?;
    if &head[..4] != b"GGUF" {
        return Err(ModelError::weights(path, "not a GGUF file (no GGUF magic)"));
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(2..=3).contains(&version) {
        return Err(ModelError::weights(
            path,
            format!("GGUF version {version} is not supported (versions 2 and 3 are)"),
        ));
    }
    reader.rewind().map_err(|e| ModelError::io(path, e))?;
    gguf_file::Content::read(reader)
        .map_err(|e| ModelError::weights(path, format!("not a readable GGUF file: {e}")))
}

impl GgufSource {
    pub fn open(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let content = read_gguf_content(&mut reader, path)?;
        let file_len = reader
            .get_ref()
            .metadata()
            .map_err(|e| ModelError::io(path, e))?
            .len();
        check_gguf_tensors(&content, file_len, path)?;
        let map = crate::ops::mmap::map_file(path).map_err(|e| ModelError::io(path, e))?;
        if map.len() as u64 != file_len {
            return Err(ModelError::weights(
                path,
                "the file changed while it was opened",
            ));
        }
        Ok(Self {
            content,
            reader,
            map,
            path: path.to_path_buf(),
            device: device.clone(),
            qk_heads: None,
            gemma: false,
        })
    }

    pub fn metadata(&self) -> &HashMap<String, gguf_file::Value> {
        &self.content.metadata
    }

    /// A tensor by its GGUF name, dequantized, as stored (no un-permutation), checked
    /// against `shape` before it is read.
    pub fn gguf_tensor(&mut self, gname: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        self.read_checked(gname, gname, shape)
    }

    /// [`Self::gguf_tensor`], with `label` naming the tensor in errors.
    fn read_checked(
        &mut self,
        gname: &str,
        label: &str,
        shape: &[usize],
    ) -> Result<Tensor, ModelError> {
        let Some(info) = self.content.tensor_infos.get(gname) else {
            return Err(ModelError::weights(
                &self.path,
                format!("tensor `{label}` is missing"),
            ));
        };
        check_dims(info.shape.dims(), label, shape, &self.path)?;
        let err = |e: candle_core::Error| {
            ModelError::weights(&self.path, format!("tensor `{label}`: {e}"))
        };
        let q = self
            .content
            .tensor(&mut self.reader, gname, &self.device)
            .map_err(err)?;
        let t = q.dequantize(&self.device).map_err(err)?;
        check_shape(t, label, shape, &self.path)
    }
}

impl GgufSource {
    /// A matrix by its GGUF name as stored: quantized and 16-bit types stay in their
    /// blocks in the mapped file (rows reordered into a copy for llama's Q and K), F32
    /// ones are read as tensors.
    fn frozen(&mut self, name: &str, shape: &[usize]) -> Result<FrozenWeight, ModelError> {
        use crate::ops::quant::{QuantMatrix, StoredType};
        let gname = hf_to_gguf_name_in(name, self.gemma)
            .ok_or_else(|| ModelError::weights(&self.path, format!("no GGUF name for `{name}`")))?;
        let label = format!("{gname}` (`{name}");
        let Some(info) = self.content.tensor_infos.get(&gname) else {
            return Err(ModelError::weights(
                &self.path,
                format!("tensor `{label}` is missing"),
            ));
        };
        check_dims(info.shape.dims(), &label, shape, &self.path)?;
        let (Some(ty), [rows, cols]) = (StoredType::from_ggml(info.ggml_dtype), shape) else {
            return Ok(FrozenWeight::F32(self.get(name, shape)?));
        };
        let bad = |m: String| ModelError::weights(&self.path, format!("tensor `{label}`: {m}"));
        // In the file by check_gguf_tensors; usize because the file is mapped.
        let start = usize::try_from(self.content.tensor_data_offset + info.offset)
            .map_err(|_| bad("offset beyond the address space".into()))?;
        let mut m = QuantMatrix::mapped(self.map.clone(), start, ty, *rows, *cols).map_err(bad)?;
        if let Some((q_heads, kv_heads)) = self.qk_heads {
            let heads = if gname.contains(".attn_q.") {
                Some(q_heads)
            } else if gname.contains(".attn_k.") {
                Some(kv_heads)
            } else {
                None
            };
            if let Some(heads) = heads {
                let d = rows / heads.max(1);
                if heads == 0 || rows % heads != 0 || d % 2 != 0 {
                    return Err(bad(format!(
                        "{rows} rows do not split into {heads} heads of even size"
                    )));
                }
                let half = d / 2;
                // Row (h, j, i) of the Hugging Face layout is row (h, i, j) of llama.cpp's.
                m = m
                    .with_rows_from(|r| {
                        let (h, rem) = (r / d, r % d);
                        h * d + (rem % half) * 2 + rem / half
                    })
                    .map_err(bad)?;
            }
        }
        Ok(FrozenWeight::Stored(std::sync::Arc::new(m)))
    }
}

impl WeightSource for GgufSource {
    fn get_frozen(&mut self, name: &str, shape: &[usize]) -> Result<FrozenWeight, ModelError> {
        self.frozen(name, shape)
    }
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        let gname = hf_to_gguf_name_in(name, self.gemma)
            .ok_or_else(|| ModelError::weights(&self.path, format!("no GGUF name for `{name}`")))?;
        // Un-permuting keeps the shape, so the check before reading is the whole check.
        let label = format!("{gname}` (`{name}");
        let mut t = self.read_checked(&gname, &label, shape)?;
        if let Some((q_heads, kv_heads)) = self.qk_heads {
            let err = |e: candle_core::Error| {
                ModelError::weights(&self.path, format!("tensor `{gname}`: {e}"))
            };
            if gname.contains(".attn_q.") {
                t = unpermute_qk(&t, q_heads).map_err(err)?;
            } else if gname.contains(".attn_k.") {
                t = unpermute_qk(&t, kv_heads).map_err(err)?;
            }
        }
        Ok(t)
    }
    fn contains(&self, name: &str) -> bool {
        hf_to_gguf_name_in(name, self.gemma)
            .is_some_and(|g| self.content.tensor_infos.contains_key(&g))
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn norms_hold_unit_offset(&self) -> bool {
        self.gemma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names() {
        assert_eq!(
            hf_to_gguf_name("model.layers.3.self_attn.q_proj.weight").as_deref(),
            Some("blk.3.attn_q.weight")
        );
        assert_eq!(
            hf_to_gguf_name("model.layers.0.mlp.down_proj.weight").as_deref(),
            Some("blk.0.ffn_down.weight")
        );
        assert_eq!(
            hf_to_gguf_name("model.layers.1.self_attn.k_proj.bias").as_deref(),
            Some("blk.1.attn_k.bias")
        );
        assert_eq!(
            hf_to_gguf_name("model.embed_tokens.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(hf_to_gguf_name("something.else"), None);
        // Gemma's four norms per block, as llama.cpp names them.
        for (hf, gguf) in [
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "post_attention_norm"),
            ("pre_feedforward_layernorm", "ffn_norm"),
            ("post_feedforward_layernorm", "post_ffw_norm"),
        ] {
            assert_eq!(
                hf_to_gguf_name_in(&format!("model.layers.2.{hf}.weight"), true),
                Some(format!("blk.2.{gguf}.weight"))
            );
        }
        assert_eq!(
            hf_to_gguf_name("model.layers.2.pre_feedforward_layernorm.weight"),
            None
        );
    }

    #[test]
    fn permutation_round_trips() {
        let t = Tensor::arange(0f32, 48.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 6))
            .unwrap();
        let p = permute_qk(&t, 2).unwrap();
        assert_ne!(p.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
        let back = unpermute_qk(&p, 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn pickles_are_refused() {
        let e = refuse_pickle(Path::new("/m/pytorch_model.bin"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pytorch_model.bin") && e.contains("never unpickled"),
            "{e}"
        );
        assert!(refuse_pickle(Path::new("/m/model.safetensors")).is_ok());
    }
}
