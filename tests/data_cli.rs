//! The `dataset` subcommands, driven through clap as `finetune-studio dataset ...` would be.
//! The CLI file is compiled into this test directly so it is tested before and after it is
//! wired into the binary.

mod data {
    pub use finetune_studio::data::*;
}
mod eval {
    pub use finetune_studio::eval::*;
}
#[allow(dead_code)]
#[path = "../src/cli/dataset.rs"]
mod dataset;
#[path = "../src/cli/dataset_contamination.rs"]
mod dataset_contamination;

use std::path::{Path, PathBuf};

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Dataset(dataset::DatasetArgs),
}

fn run(args: &[&str]) -> anyhow::Result<i32> {
    let mut argv = vec!["finetune-studio", "dataset"];
    argv.extend_from_slice(args);
    let Command::Dataset(a) = Cli::try_parse_from(argv)?.command;
    let counter = |m: &str| -> anyhow::Result<Box<dyn data::TokenCounter>> {
        anyhow::ensure!(m == "words", "no model {m}");
        Ok(Box::new(data::WhitespaceCounter))
    };
    dataset::run(a, &counter)
}

fn shared(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/datasets")
        .join(name)
}

const ALL: &[&str] = &[
    "fastchat_dummy_conversation.json",
    "llamafactory_alpaca_en_demo.json",
    "llamafactory_alpaca_zh_demo.json",
    "llamafactory_glaive_toolcall_en_demo.json",
    "llamafactory_identity.json",
    "llamafactory_v1_sft_demo.jsonl",
];

#[test]
fn every_shared_dataset_validates_stats_and_converts() {
    let dir = tempfile::tempdir().unwrap();
    for name in ALL {
        let f = shared(name);
        let f = f.to_str().unwrap();
        assert_eq!(run(&["validate", f]).unwrap(), 0, "{name}");
        assert_eq!(run(&["stats", f, "--json"]).unwrap(), 0, "{name}");
        assert_eq!(run(&["stats", f, "--model", "words"]).unwrap(), 0, "{name}");
        for (to, ext) in [
            ("sharegpt", "json"),
            ("openai", "jsonl"),
            ("parquet", "parquet"),
        ] {
            let out = dir.path().join(format!("{name}.{ext}"));
            let code = run(&["convert", f, "--to", to, "--out", out.to_str().unwrap()]).unwrap();
            assert_eq!(code, 0);
            let back = data::load(&out, None).unwrap();
            assert!(!back.is_empty());
        }
    }
    // A dataset_info entry by flag, with placeholders filled while converting.
    let info_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        shared("llamafactory_dataset_info.json"),
        info_dir.path().join("dataset_info.json"),
    )
    .unwrap();
    std::fs::copy(
        shared("llamafactory_identity.json"),
        info_dir.path().join("identity.json"),
    )
    .unwrap();
    let info = info_dir.path().join("dataset_info.json");
    let out = dir.path().join("identity.csv");
    let code = run(&[
        "convert",
        info.to_str().unwrap(),
        "--entry",
        "identity",
        "--to",
        "csv",
        "--out",
        out.to_str().unwrap(),
        "--replace",
        "{{name}}=Studio",
        "--replace",
        "{{author}}=Us",
    ])
    .unwrap();
    assert_eq!(code, 0);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("I am Studio") && !text.contains("{{"));
    assert!(
        run(&["stats", info.to_str().unwrap()]).is_err(),
        "an entry must be picked"
    );
}

#[test]
fn validate_exits_1_on_invalid_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(
        &p,
        "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"a\", \"output\": \"\"}\n",
    )
    .unwrap();
    assert_eq!(run(&["validate", p.to_str().unwrap()]).unwrap(), 1);
    assert_eq!(
        run(&["validate", p.to_str().unwrap(), "--json"]).unwrap(),
        1
    );
    assert!(run(&["convert", p.to_str().unwrap(), "--to", "nope", "--out", "x"]).is_err());
    assert!(run(&["stats", p.to_str().unwrap(), "--model", "missing"]).is_err());
}
