//! Model files mapped into memory instead of read: the one `unsafe` that loading needs.

use std::path::PathBuf;

use candle_core::safetensors::MmapedSafetensors;

/// Maps safetensors files (the shards of one model) read-only.
pub fn map_safetensors(shards: &[PathBuf]) -> candle_core::Result<MmapedSafetensors> {
    // SAFETY: the files are mapped read-only; like every mmap-based loader we rely on
    // nobody truncating a model file while the studio reads it.
    unsafe { MmapedSafetensors::multi(shards) }
}
