//! Model files mapped into memory instead of read: the one `unsafe` that loading needs.

use std::path::PathBuf;

use candle_core::safetensors::MmapedSafetensors;

/// Maps safetensors files (the shards of one model) read-only.
pub fn map_safetensors(shards: &[PathBuf]) -> candle_core::Result<MmapedSafetensors> {
    // SAFETY: the files are mapped read-only; like every mmap-based loader we rely on
    // nobody truncating a model file while the studio reads it.
    unsafe { MmapedSafetensors::multi(shards) }
}

/// Maps a whole file read-only (a GGUF model, whose tensors are then read in place).
pub fn map_file(path: &std::path::Path) -> std::io::Result<std::sync::Arc<memmap2::Mmap>> {
    let file = std::fs::File::open(path)?;
    // SAFETY: as above: read-only, and nobody truncates a model file while it is in use.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(std::sync::Arc::new(map))
}
