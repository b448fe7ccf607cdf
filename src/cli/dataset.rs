//! `finetune-studio dataset {stats, validate, convert, contamination, score}`: the
//! command-line face of [`crate::data`]. All logic lives in the library; this file parses,
//! calls and prints (`contamination` in `dataset_contamination.rs`, `score` in
//! `dataset_score.rs`).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::data::{self, Dataset, Format, Severity, Stats, StatsOptions, TokenCounter};

/// Inspect, check and convert instruction datasets.
#[derive(Debug, clap::Args)]
pub struct DatasetArgs {
    #[command(subcommand)]
    pub command: DatasetCommand,
}

/// Where the records come from (shared by every subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// Dataset file: JSON, JSONL, CSV, Parquet, or a LLaMA-Factory dataset_info.json
    /// (with --entry, or as `dataset_info.json#entry`).
    pub file: PathBuf,
    /// Entry of a dataset_info.json to load.
    #[arg(long)]
    pub entry: Option<String>,
    /// Input format, when auto-detection guesses wrong (alpaca, alpaca-jsonl, sharegpt, openai, csv, parquet, ...).
    #[arg(long = "format")]
    pub format: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum DatasetCommand {
    /// Token lengths, roles, empty fields, duplicates, diversity.
    Stats {
        #[command(flatten)]
        input: InputArgs,
        /// Count tokens with this model's tokenizer (a model folder, GGUF file or hub id);
        /// without it, an approximation (4 bytes per token) is used.
        #[arg(long)]
        model: Option<String>,
        /// Samples longer than this many tokens are reported.
        #[arg(long, default_value_t = 2048)]
        max_len: usize,
        /// Jaccard similarity for near-duplicates (0..1); 0 turns the search off.
        #[arg(long, default_value_t = 0.8)]
        near_dup_threshold: f64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print every problem with its position; exit with 1 if any record is invalid.
    Validate {
        #[command(flatten)]
        input: InputArgs,
        /// Print one JSON object per problem (JSON lines).
        #[arg(long)]
        json: bool,
    },
    /// Write the records in another format.
    Convert {
        #[command(flatten)]
        input: InputArgs,
        /// Target format: alpaca, sharegpt, openai, csv, parquet (or a variant such as
        /// alpaca-jsonl); for preference data: trl, trl-text, trl-implicit,
        /// llamafactory-sharegpt, llamafactory-alpaca.
        #[arg(long)]
        to: String,
        /// Output file (`.jsonl` / `.json` picks the JSON container).
        #[arg(long)]
        out: PathBuf,
        /// Replace a placeholder in every text, e.g. `--replace '{{name}}=Studio'` (repeatable).
        #[arg(long, value_name = "FROM=TO")]
        replace: Vec<String>,
    },
    /// Per-record loss, perplexity and IFD (instruction-following difficulty) under a model
    /// and an optional adapter, written as columns to a CSV or JSONL file; with --compare,
    /// the same under a second adapter (or the base) and the change per record.
    Score {
        #[command(flatten)]
        input: InputArgs,
        /// The model: `default`, a model folder, a GGUF file or a hub id.
        #[arg(long, default_value = "default")]
        model: String,
        /// A PEFT adapter on the model.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Score again under this adapter folder (or `base`, the model alone) and write the
        /// change of each record's loss.
        #[arg(long, value_name = "DIR|base")]
        compare: Option<String>,
        /// Samples are cut at this many tokens, as a run cuts them.
        #[arg(long, default_value_t = 1024)]
        max_len: usize,
        /// Replace a placeholder in every text before scoring (repeatable), as a run does.
        #[arg(long, value_name = "FROM=TO")]
        replace: Vec<String>,
        /// Output file: `.csv` or `.jsonl`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Preference pairs from instruction data: each record's last assistant turn is the
    /// chosen reply, the model's own greedy answer the rejected one (TRL's message layout).
    Pairs {
        #[command(flatten)]
        input: InputArgs,
        /// The model whose answers are rejected (a model folder, GGUF file, hub id or `default`).
        #[arg(long, default_value = "default")]
        model: String,
        /// Answer with this adapter on the model (e.g. an SFT run's `adapter/`).
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Replace a placeholder in every text, e.g. `--replace '{{name}}=Studio'` (repeatable).
        #[arg(long, value_name = "FROM=TO")]
        replace: Vec<String>,
        #[arg(long, default_value_t = 128)]
        max_new_tokens: usize,
        /// Output file (`.jsonl` or `.json`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Records that share a run of n words (13 by default) with another set: a dataset
    /// file, an eval suite, the built-in suite, or the file's own eval split. Exits with 1
    /// when any record is flagged.
    #[command(group(clap::ArgGroup::new("other").required(true).args(["against", "eval_split"])))]
    Contamination {
        #[command(flatten)]
        input: InputArgs,
        /// The other set: a dataset file, an eval suite (JSONL with `checks`), or `builtin`.
        #[arg(long, value_name = "FILE|builtin")]
        against: Option<String>,
        /// Check the train part of FILE against its own eval part, split as training
        /// splits it: a fraction of the records (0..1) or, from 1 up, a count.
        #[arg(long, value_name = "FRACTION|COUNT")]
        eval_split: Option<f64>,
        /// The seed of --eval-split (a run's `training.seed`).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Words per n-gram.
        #[arg(long, default_value_t = 13)]
        n: usize,
        /// Texts of the other set shorter than --n words but at least this long are
        /// matched whole.
        #[arg(long, default_value_t = 8)]
        min_words: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Loads the input of a subcommand, printing file-level warnings to stderr.
pub fn load_input(input: &InputArgs) -> anyhow::Result<Dataset> {
    let format = input
        .format
        .as_deref()
        .map(str::parse::<Format>)
        .transpose()?;
    let ds = match &input.entry {
        Some(e) => data::load_dataset_info_entry(&input.file, e),
        None => data::load(&input.file, format),
    }
    .with_context(|| format!("loading {}", input.file.display()))?;
    Ok(ds)
}

/// Runs a `dataset` subcommand and returns the process exit code. `counter_for_model` builds
/// the tokenizer-backed counter for `--model`.
pub fn run(
    args: DatasetArgs,
    counter_for_model: &dyn Fn(&str) -> anyhow::Result<Box<dyn TokenCounter>>,
) -> anyhow::Result<i32> {
    match args.command {
        DatasetCommand::Stats {
            input,
            model,
            max_len,
            near_dup_threshold,
            json,
        } => {
            let ds = load_input(&input)?;
            let counter: Box<dyn TokenCounter> = match &model {
                Some(m) => {
                    counter_for_model(m).with_context(|| format!("loading the tokenizer of {m}"))?
                }
                None => Box::new(data::ByteCounter::default()),
            };
            let opts = StatsOptions {
                max_len,
                near_duplicates: (near_dup_threshold > 0.0).then(|| data::dedup::MinHashParams {
                    threshold: near_dup_threshold.min(1.0),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let st = data::stats::compute_with(&ds, counter.as_ref(), &opts);
            let invalid = ds.invalid_records().len();
            if json {
                let mut v = serde_json::to_value(&st)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("file".into(), input.file.display().to_string().into());
                    o.insert("format".into(), ds.format().to_string().into());
                    o.insert("invalid_records".into(), invalid.into());
                }
                println!("{}", serde_json::to_string(&v)?);
            } else {
                print_stats(&input.file, &ds, &st, invalid);
            }
            Ok(0)
        }
        DatasetCommand::Validate { input, json } => {
            let ds = load_input(&input)?;
            let problems = ds.problems();
            let invalid = ds.invalid_records().len();
            if json {
                for p in &problems {
                    println!("{}", serde_json::to_string(p)?);
                }
            } else {
                for p in &problems {
                    println!("{p}");
                }
                let warnings = problems
                    .iter()
                    .filter(|p| p.severity == Severity::Warning)
                    .count();
                eprintln!(
                    "{}: {} records ({}), {} invalid, {} problems ({} warnings)",
                    input.file.display(),
                    ds.len(),
                    ds.format(),
                    invalid,
                    problems.len(),
                    warnings
                );
            }
            Ok(if invalid > 0 { 1 } else { 0 })
        }
        DatasetCommand::Convert {
            input,
            to,
            out,
            replace,
        } => {
            let mut ds = load_input(&input)?;
            let map = parse_replacements(&replace)?;
            if !map.is_empty() {
                ds.replace_placeholders(&map);
            }
            let format = to.parse::<Format>()?.for_output(&out);
            ds.write(&out, Some(format))
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "{} records: {} ({}) -> {} ({})",
                ds.len(),
                input.file.display(),
                ds.format(),
                out.display(),
                format
            );
            Ok(0)
        }
        // `score` is run by `cli::dataset_score::intercept` before this function is called.
        DatasetCommand::Score { .. } => {
            anyhow::bail!("`dataset score` runs through the binary's command line")
        }
        // Preference files and `pairs` are run by `cli::dataset_preference::intercept`
        // before this function is called.
        DatasetCommand::Pairs { .. } => {
            anyhow::bail!("`dataset pairs` runs through the binary's command line")
        }
        DatasetCommand::Contamination {
            input,
            against,
            eval_split,
            seed,
            n,
            min_words,
            json,
        } => super::dataset_contamination::run(
            &input,
            super::dataset_contamination::Other::from_args(against, eval_split, seed)?,
            data::contamination::ContaminationParams { n, min_words },
            json,
        ),
    }
}

/// `FROM=TO` arguments as pairs.
pub fn parse_replacements(replace: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    replace
        .iter()
        .map(|r| {
            r.split_once('=')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .with_context(|| format!("--replace expects FROM=TO, got `{r}`"))
        })
        .collect()
}

fn print_stats(file: &Path, ds: &Dataset, st: &Stats, invalid: usize) {
    println!(
        "{}: {} records, {}",
        file.display(),
        st.records,
        ds.format()
    );
    println!("tokens ({}):", st.counter);
    for (name, s) in [
        ("prompt", &st.prompt),
        ("response", &st.response),
        ("total", &st.total),
    ] {
        println!(
            "  {name:<9} min {:>6}  p50 {:>6}  p90 {:>6}  p99 {:>6}  max {:>6}  mean {:>8.1}  sum {}",
            s.min, s.p50, s.p90, s.p99, s.max, s.mean, s.sum
        );
    }
    println!("over {} tokens: {}", st.max_len, st.over_max.len());
    let roles: Vec<String> = st
        .role_counts
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    println!("turns by role: {}", roles.join(", "));
    let turns: Vec<String> = st
        .turn_counts
        .iter()
        .map(|(t, n)| format!("{t}: {n}"))
        .collect();
    println!("records by turn count: {}", turns.join(", "));
    println!("empty fields: {}", st.empty_fields.len());
    println!(
        "records with reasoning blocks: {}",
        st.records_with_reasoning
    );
    println!(
        "exact duplicates: {} records in {} groups",
        st.duplicate_records().len(),
        st.exact_duplicates.len()
    );
    println!(
        "near duplicates: {} records in {} groups",
        st.near_duplicate_records().len(),
        st.near_duplicates.len()
    );
    let top: Vec<String> = st
        .diversity
        .top_leading_pairs
        .iter()
        .take(8)
        .map(|(p, n)| format!("{p} ({n})"))
        .collect();
    println!(
        "diversity: {} distinct leading verb-object pairs (top: {}); distinct-1 {:.3}, distinct-2 {:.3}",
        st.diversity.distinct_leading_pairs,
        top.join(", "),
        st.diversity.distinct_1,
        st.diversity.distinct_2
    );
    println!("invalid records: {invalid}");
}
