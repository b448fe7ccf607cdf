//! The identity example's two stages end to end through the command line, on a tiny
//! random model in place of the default one: `examples/identity.toml` (SFT), `dataset
//! pairs` on the identity dataset (its answers chosen, the model's own rejected),
//! `examples/identity_dpo.toml` (DPO from the SFT run's adapter, found by `run:identity`),
//! the held-out pairs' reward accuracy in the run's metrics, and the adapter in `chat`.
//! The committed pair set, built from the default model, is checked against the dataset.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use finetune_studio::data::PreferenceSet;
use finetune_studio::model::config::Architecture;
use finetune_studio::testkit::write_tiny_model;
use finetune_studio::train::run_dir::{read_metrics, MetricLine, RunDir};
use finetune_studio::train::Stage;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn studio(home: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_finetune-studio"))
        .args(args)
        .env("FINETUNE_STUDIO_HOME", home)
        .output()
        .expect("run finetune-studio");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `examples/<name>` with the tiny model, the given table entries replaced, written as
/// `dir/<name>`.
fn tiny_config(name: &str, dir: &Path, model: &Path, set: &[(&str, &str, toml::Value)]) -> PathBuf {
    let text = std::fs::read_to_string(example(name)).expect("read the example");
    let mut doc: toml::Table = toml::from_str(&text).expect("the example parses");
    let mut put = |table: &str, key: &str, value: toml::Value| {
        let t = doc
            .entry(table)
            .or_insert_with(|| toml::Value::Table(Default::default()));
        t.as_table_mut().expect("a table").insert(key.into(), value);
    };
    put("model", "base", model.display().to_string().into());
    put(
        "output",
        "runs_dir",
        dir.join("runs").display().to_string().into(),
    );
    for (table, key, value) in set {
        put(table, key, value.clone());
    }
    let path = dir.join(name);
    std::fs::write(&path, toml::to_string(&doc).expect("toml")).expect("write the config");
    path
}

/// The one run folder under `dir/runs` whose name ends with `-<name>`.
fn run_named(dir: &Path, name: &str) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.join("runs"))
        .expect("runs")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(&format!("-{name}")))
        })
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

#[test]
fn identity_sft_then_pairs_then_dpo_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let model = write_tiny_model(&dir.path().join("model"), Architecture::Llama, 11).unwrap();
    let data = example("data/identity.json");
    let data_s = data.display().to_string();

    // Stage one: the identity SFT example, a few steps.
    let sft = tiny_config(
        "identity.toml",
        dir.path(),
        &model,
        &[
            ("data", "path", data_s.clone().into()),
            ("training", "max_steps", 4.into()),
            ("training", "eval_every", 0.into()),
            (
                "eval",
                "suite",
                example("identity_suite.jsonl").display().to_string().into(),
            ),
            ("eval", "suite_max_new_tokens", 4.into()),
        ],
    );
    studio(&home, &["train", "--config", &sft.display().to_string()]);
    let sft_run = run_named(dir.path(), "identity");
    assert!(sft_run
        .join("adapter")
        .join("adapter_model.safetensors")
        .is_file());

    // The pairs: the dataset's answers (names filled in) chosen, the model's rejected.
    // The random model's greedy answers are mostly blank (which make no pair); with a
    // random adapter on it, they are byte soup.
    let soup = dir.path().join("soup-adapter");
    finetune_studio::testkit::write_tiny_adapter(&soup, Architecture::Llama, 17).unwrap();
    let pairs = dir.path().join("pairs.jsonl");
    studio(
        &home,
        &[
            "dataset",
            "pairs",
            &data_s,
            "--model",
            &model.display().to_string(),
            "--adapter",
            &soup.display().to_string(),
            "--replace",
            "{{name}}=Nova",
            "--replace",
            "{{author}}=Orchid Labs",
            "--max-new-tokens",
            "8",
            "--out",
            &pairs.display().to_string(),
        ],
    );
    let set = PreferenceSet::load(&pairs).expect("the pairs load");
    assert!(set.len() >= 80, "{} pairs", set.len());
    assert!(set.invalid_pairs().is_empty(), "{:?}", set.problems());
    let who = set
        .pairs
        .iter()
        .find(|p| p.last_user_text() == "Who are you?")
        .expect("a pair for `Who are you?`");
    assert!(who.chosen[0].content.contains("Nova"), "{:?}", who.chosen);
    assert!(!who.chosen[0].content.contains("{{name}}"));
    assert_eq!(who.meta["models"]["chosen"], "dataset identity.json");
    assert_eq!(who.meta["adapters"]["rejected"], soup.display().to_string());

    // Stage two: the DPO example from the SFT run's adapter.
    let dpo = tiny_config(
        "identity_dpo.toml",
        dir.path(),
        &model,
        &[
            ("data", "path", pairs.display().to_string().into()),
            ("data", "max_seq_len", 96.into()),
            ("training", "max_steps", 12.into()),
            ("training", "eval_every", 6.into()),
            ("optim", "learning_rate", 1e-2.into()),
        ],
    );
    let out = studio(&home, &["train", "--config", &dpo.display().to_string()]);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("held-out reward accuracy"), "{log}");
    let dpo_run = run_named(dir.path(), "identity-dpo");
    let (_, cfg) = RunDir::open(&dpo_run).expect("open the DPO run");
    assert_eq!(cfg.stage, Stage::Dpo);
    assert_eq!(
        cfg.init_adapter.as_deref(),
        Some(sft_run.join("adapter").as_path()),
        "run:identity names the SFT run's adapter"
    );
    let held_out: Vec<(usize, f64, f64)> = read_metrics(&dpo_run)
        .into_iter()
        .filter_map(|l| match l {
            MetricLine::PreferenceEval { step, metrics } => {
                Some((step, metrics.reward_accuracy, metrics.reward_margin))
            }
            _ => None,
        })
        .collect();
    eprintln!("held-out (step, accuracy, margin): {held_out:?}");
    assert!(held_out.len() >= 2, "{held_out:?}");
    assert_eq!(held_out[0].0, 6);
    let (last, accuracy, margin) = held_out[held_out.len() - 1];
    assert_eq!(last, 12);
    assert!(accuracy > 0.5, "held-out reward accuracy {accuracy}");
    assert!(margin > held_out[0].2 && margin > 0.0, "{held_out:?}");

    // The adapter answers in chat.
    let adapter = dpo_run.join("adapter");
    let out = studio(
        &home,
        &[
            "chat",
            "--model",
            &model.display().to_string(),
            "--adapter",
            &adapter.display().to_string(),
            "--prompt",
            "Who are you?",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
            "--json",
        ],
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("chat JSON");
    assert!(reply["text"].is_string(), "{reply}");
}

/// The committed pairs: every record of the identity dataset the default model did not
/// answer word for word, the dataset's answer chosen, the model's greedy answer rejected.
#[test]
fn the_committed_identity_pairs_match_the_dataset() {
    let set = PreferenceSet::load(&example("data/identity_pairs.jsonl")).expect("load");
    assert!(set.invalid_pairs().is_empty(), "{:?}", set.problems());
    let ds = finetune_studio::data::load(&example("data/identity.json"), None).expect("dataset");
    assert!(
        set.len() + 5 >= ds.len(),
        "{} of {} records",
        set.len(),
        ds.len()
    );
    let fill = |s: &str| {
        s.replace("{{name}}", "Nova")
            .replace("{{author}}", "Orchid Labs")
    };
    let mut answers: std::collections::HashMap<String, Vec<String>> = Default::default();
    for r in ds.records() {
        answers
            .entry(fill(&r.messages[0].content))
            .or_default()
            .push(fill(&r.messages[1].content));
    }
    for p in &set.pairs {
        let q = p.last_user_text();
        assert!(
            answers
                .get(q)
                .is_some_and(|a| a.contains(&p.chosen[0].content)),
            "{q}: {:?}",
            p.chosen
        );
        assert_eq!(
            p.meta["models"]["rejected"],
            "SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        assert_eq!(p.meta["sampling"]["temperature"], 0.0);
    }
}
