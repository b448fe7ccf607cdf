//! The contamination check: a record copied (whole or in part) from an eval set into a
//! training set is flagged with the matching text and the eval record's id, and unrelated
//! records are not; the same through `finetune-studio dataset contamination` against a
//! dataset file, a suite file, the built-in suite and the file's own eval split.

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
use finetune_studio::data::contamination::{check, ContaminationParams, Reference};
use finetune_studio::data::split::{split_indices, EvalSize};
use finetune_studio::data::{Conversation, Message, Role};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/datasets")
        .join(name)
}

fn load(name: &str) -> Vec<Conversation> {
    finetune_studio::data::load(&fixture(name), None)
        .unwrap()
        .into_records()
}

fn refs(records: &[Conversation]) -> Vec<Reference> {
    records
        .iter()
        .enumerate()
        .map(|(i, c)| Reference::from_record(i, c))
        .collect()
}

fn record(user: &str, assistant: &str) -> Conversation {
    Conversation {
        messages: vec![
            Message::new(Role::User, user),
            Message::new(Role::Assistant, assistant),
        ],
        ..Default::default()
    }
}

#[test]
fn a_planted_record_is_flagged_and_unrelated_ones_are_not() {
    // The last 200 records of the Alpaca demo as the eval set, the rest as training data.
    let all = load("llamafactory_alpaca_en_demo.json");
    assert_eq!(all.len(), 999);
    let (train, eval_set) = all.split_at(799);
    let mut train = train.to_vec();
    let references = refs(eval_set);

    // As the data is, one training record shares a stock phrase with eval record 18, one
    // has the same instruction as eval record 67 (a text under 13 words, matched whole),
    // and no other record is flagged.
    let clean = check(&train, &references, ContaminationParams::default());
    assert_eq!(clean.records, 799);
    assert_eq!(clean.references, 200);
    let flagged: Vec<usize> = clean.flagged.iter().map(|f| f.record).collect();
    assert_eq!(flagged, [80, 170]);
    let o = &clean.flagged[0].overlaps[0];
    assert_eq!(o.other_id, "#18");
    assert!(
        o.text.to_lowercase().contains("as an ai language model"),
        "{}",
        o.text
    );
    let o = &clean.flagged[1].overlaps[0];
    assert_eq!(o.other_id, "#67");
    assert_eq!(
        o.text,
        "Identify the type of the following phrase: \"an eight year-old girl\"."
    );

    // A whole eval record copied in, and 20 words of another quoted inside a record.
    let copied = train.len();
    train.push(eval_set[2].clone());
    let answer = &eval_set[1].messages[1].content;
    let span: Vec<&str> = answer.split_whitespace().skip(2).take(20).collect();
    let span = span.join(" ");
    let quoted = train.len();
    train.push(record(
        "Summarize this for me.",
        &format!("Sure. As written elsewhere: {span} That is all."),
    ));

    let r = check(&train, &references, ContaminationParams::default());
    let flagged: Vec<usize> = r.flagged.iter().map(|f| f.record).collect();
    assert_eq!(flagged, [80, 170, copied, quoted]);
    let whole = &r.flagged[2];
    assert!(!whole.overlaps.is_empty());
    assert!(whole
        .overlaps
        .iter()
        .all(|o| o.other_index == 2 && o.other_id == "#2"));
    // The copied answer is found as one span, as long as the answer.
    let copied_answer = &eval_set[2].messages[1].content;
    assert!(whole
        .overlaps
        .iter()
        .any(|o| o.text == copied_answer.trim()));
    let part = &r.flagged[3];
    assert_eq!(part.overlaps.len(), 1);
    assert_eq!(part.overlaps[0].other_index, 1);
    assert_eq!(
        part.overlaps[0].text, span,
        "the span as the training text has it"
    );
    assert_eq!(part.overlaps[0].words, 20);

    // An n longer than the quote does not find it.
    let r = check(
        &train,
        &references,
        ContaminationParams {
            n: 21,
            min_words: 21,
        },
    );
    assert!(r.flagged.iter().all(|f| f.record != quoted));
    assert!(r.flagged.iter().any(|f| f.record == copied));
}

#[test]
fn other_records_are_named_by_their_id() {
    let eval_set = vec![{
        let mut c = record(
            "Explain in detail how a rainbow forms after a summer storm passes over the hills",
            "Light refracts.",
        );
        c.meta.insert("id".into(), "rainbow-q".into());
        c
    }];
    let train = vec![
        record(
            "explain in detail: how a RAINBOW forms after a summer storm passes over the hills?",
            "ok",
        ),
        record("How do clouds form?", "Water vapour condenses."),
    ];
    let r = check(&train, &refs(&eval_set), ContaminationParams::default());
    assert_eq!(r.flagged.len(), 1);
    assert_eq!(r.flagged[0].record, 0);
    assert_eq!(r.flagged[0].overlaps[0].other_id, "rainbow-q");
    assert_eq!(
        r.flagged[0].overlaps[0].text,
        "explain in detail: how a RAINBOW forms after a summer storm passes over the hills?"
    );
}

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
    let counter =
        |m: &str| -> anyhow::Result<Box<dyn data::TokenCounter>> { anyhow::bail!("no model {m}") };
    dataset::run(a, &counter)
}

fn write_jsonl(path: &Path, records: &[serde_json::Value]) {
    let text: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    std::fs::write(path, text.join("\n") + "\n").unwrap();
}

#[test]
fn the_command_line_flags_against_a_file_a_suite_and_the_builtin_suite() {
    let dir = tempfile::tempdir().unwrap();
    let train = fixture("llamafactory_alpaca_en_demo.json");
    let train = train.to_str().unwrap();
    let other = fixture("fastchat_dummy_conversation.json");
    let other = other.to_str().unwrap();
    assert_eq!(
        run(&["contamination", train, "--against", other]).unwrap(),
        0
    );
    assert_eq!(
        run(&["contamination", train, "--against", other, "--json"]).unwrap(),
        0
    );

    // A training file with the built-in suite's first prompt in it.
    let builtin = finetune_studio::eval::Suite::builtin().unwrap();
    let eval::SuiteInput::Prompt(prompt) = &builtin.items[0].input else {
        panic!("the built-in suite starts with a prompt")
    };
    let planted = dir.path().join("planted.jsonl");
    write_jsonl(
        &planted,
        &[
            serde_json::json!({"instruction": "Name a planet.", "input": "", "output": "Mars."}),
            serde_json::json!({"instruction": prompt, "input": "", "output": "Paris."}),
        ],
    );
    let planted = planted.to_str().unwrap();
    assert_eq!(
        run(&["contamination", planted, "--against", "builtin"]).unwrap(),
        1
    );
    assert_eq!(
        run(&["contamination", planted, "--against", "builtin", "--json"]).unwrap(),
        1
    );
    let r = check(
        &finetune_studio::data::load(Path::new(planted), None)
            .unwrap()
            .into_records(),
        &builtin.references(),
        ContaminationParams::default(),
    );
    assert_eq!(r.flagged.len(), 1);
    assert_eq!(r.flagged[0].record, 1);
    assert_eq!(r.flagged[0].overlaps[0].other_id, builtin.items[0].id);

    // A suite file is read as a suite, a dataset as a dataset.
    let suite = dir.path().join("suite.jsonl");
    write_jsonl(
        &suite,
        &[
            serde_json::json!({"id": "s1", "prompt": "Name a planet of the solar system other than the Earth please", "checks": [{"type": "no_commas"}]}),
        ],
    );
    let suite = suite.to_str().unwrap();
    assert_eq!(
        run(&["contamination", planted, "--against", suite]).unwrap(),
        0
    );
    assert_eq!(
        run(&["contamination", planted, "--against", planted]).unwrap(),
        1
    );

    // Errors: a missing file, a malformed suite, a bad --n.
    assert!(run(&["contamination", planted, "--against", "/nonexistent.json"]).is_err());
    std::fs::write(
        dir.path().join("bad.jsonl"),
        "{\"id\": 1, \"prompt\": \"x\", \"checks\": [{\"type\": \"zap\"}]}\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.jsonl");
    let e = run(&["contamination", planted, "--against", bad.to_str().unwrap()]).unwrap_err();
    assert!(format!("{e:#}").contains("bad.jsonl:1:"), "{e:#}");
    assert!(run(&["contamination", planted, "--against", "builtin", "--n", "0"]).is_err());
    assert!(
        run(&["contamination", planted]).is_err(),
        "--against or --eval-split is needed"
    );
    assert!(run(&[
        "contamination",
        planted,
        "--against",
        "builtin",
        "--eval-split",
        "0.1"
    ])
    .is_err());
}

#[test]
fn the_command_line_checks_a_file_against_its_own_eval_split() {
    let dir = tempfile::tempdir().unwrap();
    let n = 40;
    let split = split_indices(n, EvalSize::Ratio(0.25), 42);
    let (t, e) = (split.train[3], split.eval[1]);
    let text = |i: usize| {
        format!("Record {i} talks about topic number {i} with words that belong to record {i} alone and no other")
    };
    let records: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            // The train record `t` repeats the eval record `e`'s answer.
            let answer = if i == t { text(e) } else { text(i) };
            serde_json::json!({"instruction": format!("Question {i}?"), "input": "", "output": answer})
        })
        .collect();
    let path = dir.path().join("d.jsonl");
    write_jsonl(&path, &records);
    let p = path.to_str().unwrap();
    assert_eq!(
        run(&["contamination", p, "--eval-split", "0.25"]).unwrap(),
        1
    );
    assert_eq!(
        run(&["contamination", p, "--eval-split", "0.25", "--json"]).unwrap(),
        1
    );
    // Another seed puts the two records elsewhere; one seed keeps them on one side.
    let same_side = (0..200u64)
        .find(|&s| {
            let sp = split_indices(n, EvalSize::Ratio(0.25), s);
            sp.train.contains(&t) == sp.train.contains(&e)
        })
        .expect("a seed that keeps both records on one side");
    let seed = same_side.to_string();
    assert_eq!(
        run(&["contamination", p, "--eval-split", "0.25", "--seed", &seed]).unwrap(),
        0
    );
    assert!(run(&["contamination", p, "--eval-split", "10"]).is_ok());
    assert!(run(&["contamination", p, "--eval-split", "2.5"]).is_err());
    assert!(run(&["contamination", p, "--eval-split", "-1"]).is_err());
}
