//! The other side of a contamination check, named as a user names it: `builtin` (the
//! built-in suite's prompts), a suite file (JSONL whose first line has `checks`), or any
//! dataset file the studio reads. Shared by `dataset contamination` and the Datasets tab.

use std::path::Path;

use anyhow::Context;

use super::suite::{looks_like_suite, Suite, BUILTIN_NAME};
use crate::data::contamination::Reference;

/// The records of the set `spec` names, as references to check against.
pub fn read_references(spec: &str) -> anyhow::Result<Vec<Reference>> {
    let path = Path::new(spec);
    if spec == BUILTIN_NAME || looks_like_suite(path) {
        return Ok(Suite::load(spec)?.references());
    }
    let ds = crate::data::load(path, None).with_context(|| format!("loading {spec}"))?;
    Ok(ds
        .records()
        .iter()
        .enumerate()
        .map(|(i, c)| Reference::from_record(i, c))
        .collect())
}
