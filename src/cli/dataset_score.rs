//! `finetune-studio dataset score FILE --out FILE.csv|.jsonl`: each record's loss,
//! perplexity and IFD under a model and optional adapter ([`crate::train::score`]), with a
//! progress bar; with `--compare`, the same under a second adapter or the base and the
//! change of each record's loss. Prints the hardest records and, when comparing, how many
//! the second one made better and worse.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::Dataset;
use crate::model::lora::LoraSet;
use crate::model::Model;
use crate::train::score::{score_records, RecordScore, ScoreResult};

/// Records scored per forward batch (and per progress tick).
const CHUNK: usize = 16;

/// Runs `dataset score` when `args` asks for it; `None` for the other subcommands.
pub fn intercept(args: &super::dataset::DatasetArgs) -> anyhow::Result<Option<i32>> {
    let super::dataset::DatasetCommand::Score {
        input,
        model,
        adapter,
        compare,
        max_len,
        replace,
        out,
    } = &args.command
    else {
        return Ok(None);
    };
    let mut ds = super::dataset::load_input(input)?;
    let map = super::dataset::parse_replacements(replace)?;
    if !map.is_empty() {
        ds.replace_placeholders(&map);
    }
    let args = ScoreArgs {
        model: model.clone(),
        adapter: adapter.clone(),
        compare: compare.clone(),
        max_len: *max_len,
        out: out.clone(),
    };
    run(&ds, &args).map(Some)
}

pub struct ScoreArgs {
    pub model: String,
    pub adapter: Option<PathBuf>,
    pub compare: Option<String>,
    pub max_len: usize,
    pub out: PathBuf,
}

/// One output row.
#[derive(serde::Serialize)]
struct Row {
    record: usize,
    tokens: Option<usize>,
    loss: Option<f64>,
    perplexity: Option<f64>,
    ifd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compare_loss: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compare_perplexity: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compare_ifd: Option<Option<f64>>,
    /// The second model's loss less the first's: negative where it does better.
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_change: Option<Option<f64>>,
    error: Option<String>,
}

/// The adapter in `dir`, read as chat and batch compare read theirs.
fn read_adapter(model: &Model, dir: &std::path::Path) -> anyhow::Result<Arc<LoraSet>> {
    crate::worker::chat_job::read_adapter(model, dir).map_err(anyhow::Error::msg)
}

fn score_all(
    model: &Model,
    lora: Option<&LoraSet>,
    ds: &Dataset,
    max_len: usize,
    what: &str,
) -> anyhow::Result<Vec<ScoreResult>> {
    let bar = ProgressBar::new(ds.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} records  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    let records: Vec<&crate::data::Conversation> = ds.conversations.iter().collect();
    let mut out = Vec::with_capacity(records.len());
    for chunk in records.chunks(CHUNK) {
        out.extend(score_records(model, lora, chunk, max_len)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

pub fn run(ds: &Dataset, args: &ScoreArgs) -> anyhow::Result<i32> {
    let ext = args
        .out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let csv = match ext.as_deref() {
        Some("csv") => true,
        Some("jsonl") => false,
        _ => anyhow::bail!(
            "{}: the output must end in .csv or .jsonl",
            args.out.display()
        ),
    };
    if args.max_len < 2 {
        anyhow::bail!("--max-len must be at least 2");
    }
    let base = Arc::new(super::load_model(&args.model)?);
    // Each adapter's records are rendered with the template its run trained with.
    let with_template = |dir: Option<&std::path::Path>| {
        crate::worker::chat_job::templated(
            &base,
            &crate::worker::chat_job::TemplateSpec::default(),
            dir,
        )
        .map_err(anyhow::Error::msg)
    };
    let model = with_template(args.adapter.as_deref())?;
    let lora = args
        .adapter
        .as_ref()
        .map(|d| read_adapter(&model, d))
        .transpose()?;
    let compare_dir = args
        .compare
        .as_deref()
        .filter(|c| *c != "base")
        .map(std::path::Path::new);
    let compare_model = with_template(compare_dir)?;
    let compare_lora = match args.compare.as_deref() {
        None => None,
        Some("base") => Some(None),
        Some(dir) => Some(Some(read_adapter(&model, std::path::Path::new(dir))?)),
    };
    let first = score_all(&model, lora.as_deref(), ds, args.max_len, "scoring")?;
    let second = match &compare_lora {
        Some(l) => Some(score_all(
            &compare_model,
            l.as_deref(),
            ds,
            args.max_len,
            "scoring for the comparison",
        )?),
        None => None,
    };
    let rows: Vec<Row> = first
        .iter()
        .enumerate()
        .map(|(i, a)| row(i, a, second.as_ref().map(|s| &s[i])))
        .collect();
    write_rows(&args.out, &rows, csv)?;
    summarize(ds, &first, second.as_deref());
    eprintln!("wrote {} rows to {}", rows.len(), args.out.display());
    Ok(0)
}

fn row(record: usize, a: &ScoreResult, b: Option<&ScoreResult>) -> Row {
    let ok = a.as_ref().ok();
    let b_ok = b.and_then(|b| b.as_ref().ok());
    let error = match (a, b) {
        (Err(e), _) => Some(e.clone()),
        (Ok(_), Some(Err(e))) => Some(format!("comparison: {e}")),
        _ => None,
    };
    Row {
        record,
        tokens: ok.map(|s| s.tokens),
        loss: ok.map(|s| s.loss),
        perplexity: ok.map(|s| s.perplexity),
        ifd: ok.and_then(|s| s.ifd),
        compare_loss: b.map(|_| b_ok.map(|s| s.loss)),
        compare_perplexity: b.map(|_| b_ok.map(|s| s.perplexity)),
        compare_ifd: b.map(|_| b_ok.and_then(|s| s.ifd)),
        loss_change: b.map(|_| Some(b_ok?.loss - ok?.loss)),
        error,
    }
}

fn write_rows(path: &std::path::Path, rows: &[Row], csv: bool) -> anyhow::Result<()> {
    let body = if csv {
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in rows {
            w.serialize(r)?;
        }
        w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        let mut buf = Vec::new();
        for r in rows {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        buf
    };
    crate::fsio::write_file_atomic(path, |w| w.write_all(&body))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The five hardest records by IFD, the mean loss, and the comparison's counts.
fn summarize(ds: &Dataset, first: &[ScoreResult], second: Option<&[ScoreResult]>) {
    let scored: Vec<(usize, &RecordScore)> = first
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s.as_ref().ok()?)))
        .collect();
    let failed = first.len() - scored.len();
    if scored.is_empty() {
        eprintln!("no record could be scored ({failed} without an assistant turn or with errors)");
        return;
    }
    let mean = scored.iter().map(|(_, s)| s.loss).sum::<f64>() / scored.len() as f64;
    eprintln!(
        "{} records scored ({failed} not), mean loss {mean:.4}, perplexity {:.2}",
        scored.len(),
        mean.exp()
    );
    let mut by_ifd: Vec<&(usize, &RecordScore)> =
        scored.iter().filter(|(_, s)| s.ifd.is_some()).collect();
    by_ifd.sort_by(|a, b| b.1.ifd.unwrap_or(0.0).total_cmp(&a.1.ifd.unwrap_or(0.0)));
    for (i, s) in by_ifd.iter().take(5) {
        let prompt = ds.conversations[*i]
            .messages
            .iter()
            .find(|m| !m.role.is_trained())
            .map(|m| m.content.chars().take(60).collect::<String>())
            .unwrap_or_default();
        eprintln!(
            "  record {:>5}: IFD {:.3}, loss {:.3}  {prompt}",
            i + 1,
            s.ifd.unwrap_or(0.0),
            s.loss
        );
    }
    if let Some(second) = second {
        let changes: Vec<f64> = first
            .iter()
            .zip(second)
            .filter_map(|(a, b)| Some(b.as_ref().ok()?.loss - a.as_ref().ok()?.loss))
            .collect();
        let better = changes.iter().filter(|&&d| d < 0.0).count();
        let worse = changes.iter().filter(|&&d| d > 0.0).count();
        eprintln!(
            "compared: {better} records with a lower loss, {worse} with a higher one (of {})",
            changes.len()
        );
    }
}
