//! `dataset validate` and `dataset convert` on preference files (TRL layouts, LLaMA-Factory
//! ranking entries): the problems of every pair, and the pairs written in another layout
//! (for LLaMA-Factory, with the `dataset_info.json` entry that reads them).

use anyhow::Context;

use super::dataset::InputArgs;
use crate::data::preference_formats::{dataset_info_value, is_preference_path};
use crate::data::{Encoding, PreferenceFormat, PreferenceLayout, PreferenceSet, Severity};

/// Runs the `dataset` subcommands that concern preference data (`validate` and `convert`
/// of a preference file, `pairs`); `None` for the others, which `dataset::run` handles.
pub fn intercept(args: &super::dataset::DatasetArgs) -> anyhow::Result<Option<i32>> {
    use super::dataset::DatasetCommand as C;
    Ok(Some(match &args.command {
        C::Validate { input, json } if is_preference(input) => validate(input, *json)?,
        C::Convert {
            input,
            to,
            out,
            replace,
        } if is_preference(input) && replace.is_empty() => convert(input, to, out)?,
        C::Pairs {
            input,
            model,
            adapter,
            replace,
            max_new_tokens,
            out,
        } => {
            let ds = super::dataset::load_input(input)?;
            let map = super::dataset::parse_replacements(replace)?;
            let n = super::dataset_pairs::run(
                &ds,
                model,
                adapter.as_deref(),
                &map,
                *max_new_tokens,
                out,
            )?;
            eprintln!("{n} preference pairs -> {}", out.display());
            0
        }
        _ => return Ok(None),
    }))
}

/// The path `input` names (`file#entry` with `--entry`).
fn source(input: &InputArgs) -> std::path::PathBuf {
    match &input.entry {
        Some(e) => std::path::PathBuf::from(format!("{}#{e}", input.file.display())),
        None => input.file.clone(),
    }
}

/// Whether the input is preference data.
pub fn is_preference(input: &InputArgs) -> bool {
    input.format.is_none() && is_preference_path(&source(input))
}

fn load(input: &InputArgs) -> anyhow::Result<PreferenceSet> {
    let path = source(input);
    PreferenceSet::open(&path).with_context(|| format!("loading {}", path.display()))
}

/// Prints every problem; 1 when a pair is invalid.
pub fn validate(input: &InputArgs, json: bool) -> anyhow::Result<i32> {
    let set = load(input)?;
    let problems = set.problems();
    for p in &problems {
        if json {
            println!("{}", serde_json::to_string(p)?);
        } else {
            println!("{p}");
        }
    }
    let invalid = set.invalid_pairs().len();
    if !json {
        let warnings = problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
            .count();
        eprintln!(
            "{}: {} preference pairs ({}), {invalid} invalid, {} problems ({warnings} warnings)",
            input.file.display(),
            set.len(),
            set.format().layout.label(),
            problems.len()
        );
    }
    Ok(i32::from(invalid > 0))
}

/// The layout `--to` names for preference data, if it names one.
pub fn layout_named(name: &str) -> Option<PreferenceLayout> {
    Some(match name.to_ascii_lowercase().as_str() {
        "trl" | "trl-messages" => PreferenceLayout::TrlConversational,
        "trl-text" => PreferenceLayout::TrlStandard,
        "trl-implicit" => PreferenceLayout::TrlImplicit,
        "llamafactory" | "llamafactory-sharegpt" | "sharegpt" => PreferenceLayout::ShareGptRanking,
        "llamafactory-alpaca" | "alpaca" => PreferenceLayout::AlpacaRanking,
        _ => return None,
    })
}

/// Writes the pairs in another layout; prints the dataset_info.json entry LLaMA-Factory
/// needs when the layout is one of its.
pub fn convert(input: &InputArgs, to: &str, out: &std::path::Path) -> anyhow::Result<i32> {
    let set = load(input)?;
    let layout = layout_named(to).with_context(|| {
        format!("unknown preference layout `{to}` (one of: trl, trl-text, trl-implicit, llamafactory-sharegpt, llamafactory-alpaca)")
    })?;
    let encoding = match out.extension().and_then(|e| e.to_str()) {
        Some("json") => Encoding::Json,
        _ => Encoding::JsonLines,
    };
    let format = PreferenceFormat::new(layout, encoding);
    let mut copy = set.clone();
    copy.save(out, Some(format.clone()))
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "{} preference pairs: {} ({}) -> {} ({})",
        set.len(),
        input.file.display(),
        set.format().layout.label(),
        out.display(),
        layout.label()
    );
    let file_name = out
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(entry) = dataset_info_value(&file_name, &format) {
        let stem = file_name.split('.').next().unwrap_or("pairs").to_string();
        let mut info = serde_json::Map::new();
        info.insert(stem, entry);
        eprintln!("the dataset_info.json entry LLaMA-Factory reads it with:");
        println!("{}", serde_json::to_string_pretty(&info)?);
    }
    Ok(0)
}
