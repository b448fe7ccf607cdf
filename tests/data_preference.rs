//! Preference files: TRL's layouts (text, messages, implicit prompt) and LLaMA-Factory's
//! ranking entries load into the same pairs, save back in their own layout (atomically,
//! keeping `.bak`), convert between layouts where the target can hold them, and every
//! refusal names the file and the record.

use std::path::Path;

use finetune_studio::data::{
    DataError, Encoding, PreferenceEdit, PreferenceFormat, PreferenceLayout, PreferencePair,
    PreferenceSet, Role,
};
use serde_json::{json, Value};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn lines(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

/// The pair every layout below spells: a system prompt, one question, two answers.
fn expected() -> PreferencePair {
    let mut p = PreferencePair::single_turn("Who are you?", "I am Studio.", "I am a model.");
    p.system = Some("Be brief.".into());
    p
}

#[test]
fn every_layout_reads_the_same_pair() {
    let dir = tempfile::tempdir().unwrap();
    let conv = write(
        dir.path(),
        "conv.jsonl",
        &lines(&[json!({
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"}],
            "chosen": [{"role": "assistant", "content": "I am Studio."}],
            "rejected": [{"role": "assistant", "content": "I am a model."}],
            "score": 3
        })]),
    );
    let implicit = write(
        dir.path(),
        "implicit.json",
        &serde_json::to_string(&json!([{
            "chosen": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Studio."}],
            "rejected": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am a model."}]
        }]))
        .unwrap(),
    );
    let sharegpt = write(
        dir.path(),
        "lf_sharegpt.json",
        &serde_json::to_string(&json!([{
            "conversations": [{"from": "human", "value": "Who are you?"}],
            "system": "Be brief.",
            "chosen": {"from": "gpt", "value": "I am Studio."},
            "rejected": {"from": "gpt", "value": "I am a model."}
        }]))
        .unwrap(),
    );
    let alpaca = write(
        dir.path(),
        "lf_alpaca.json",
        &serde_json::to_string(&json!([{
            "instruction": "Who are you?", "input": "", "system": "Be brief.",
            "chosen": "I am Studio.", "rejected": "I am a model."
        }]))
        .unwrap(),
    );
    let cases = [
        (
            &conv,
            PreferenceLayout::TrlConversational,
            Encoding::JsonLines,
        ),
        (&implicit, PreferenceLayout::TrlImplicit, Encoding::Json),
        (&sharegpt, PreferenceLayout::ShareGptRanking, Encoding::Json),
        (&alpaca, PreferenceLayout::AlpacaRanking, Encoding::Json),
    ];
    for (path, layout, encoding) in cases {
        let set = PreferenceSet::load(path).unwrap();
        assert_eq!(set.format().layout, layout, "{}", path.display());
        assert_eq!(set.format().encoding, encoding, "{}", path.display());
        assert_eq!(set.len(), 1);
        let mut got = set.pairs[0].clone();
        got.meta.clear();
        assert_eq!(got, expected(), "{}", path.display());
        assert!(set.problems().is_empty(), "{:?}", set.problems());
    }
    // Unknown fields are kept and written back.
    let set = PreferenceSet::load(&conv).unwrap();
    assert_eq!(set.pairs[0].meta.get("score"), Some(&json!(3)));
}

#[test]
fn text_layout_and_save_round_trip_with_backup() {
    let dir = tempfile::tempdir().unwrap();
    let records = [
        json!({"prompt": "2+2?", "chosen": "4", "rejected": "5"}),
        json!({"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon", "source": "ab"}),
    ];
    let path = write(dir.path(), "std.jsonl", &lines(&records));
    let original = std::fs::read(&path).unwrap();
    let mut set = PreferenceSet::load(&path).unwrap();
    assert_eq!(set.format().layout, PreferenceLayout::TrlStandard);
    assert_eq!(set.pairs[1].prompt[0].role, Role::User);
    // Unchanged, it writes back byte for byte.
    assert_eq!(set.to_bytes(None).unwrap(), original);
    set.apply(PreferenceEdit::Swap(0)).unwrap();
    assert!(set.is_dirty());
    set.save(&path, None).unwrap();
    assert!(!set.is_dirty());
    assert_eq!(
        std::fs::read(dir.path().join("std.jsonl.bak")).unwrap(),
        original
    );
    let back = PreferenceSet::load(&path).unwrap();
    assert_eq!(back.pairs[0].chosen[0].content, "5");
    assert_eq!(back.pairs[1].meta.get("source"), Some(&json!("ab")));
}

#[test]
fn converts_to_llamafactory_and_trl_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut multi = expected();
    multi
        .prompt
        .insert(0, finetune_studio::data::Message::new(Role::User, "Hi"));
    multi.prompt.insert(
        1,
        finetune_studio::data::Message::new(Role::Assistant, "Hello."),
    );
    let set =
        PreferenceSet::from_pairs(vec![expected(), multi.clone()], PreferenceFormat::default());
    for layout in [
        PreferenceLayout::TrlConversational,
        PreferenceLayout::TrlImplicit,
        PreferenceLayout::ShareGptRanking,
        PreferenceLayout::AlpacaRanking,
    ] {
        let mut copy = set.clone();
        let path = dir.path().join(format!("{layout:?}.json"));
        copy.save(&path, Some(PreferenceFormat::new(layout, Encoding::Json)))
            .unwrap();
        let back = PreferenceSet::load(&path).unwrap();
        assert_eq!(back.format().layout, layout);
        assert_eq!(back.pairs, vec![expected(), multi.clone()], "{layout:?}");
    }
    // TRL's text layout cannot hold a system prompt: refused, naming the file and record,
    // and the file is not written.
    let mut copy = set.clone();
    let path = dir.path().join("std.jsonl");
    let err = copy
        .save(
            &path,
            Some(PreferenceFormat::new(
                PreferenceLayout::TrlStandard,
                Encoding::JsonLines,
            )),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("std.jsonl") && msg.contains("record 0"),
        "{msg}"
    );
    assert!(!path.exists());
}

#[test]
fn llamafactory_ranking_entry_loads_with_its_columns_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "pairs.json",
        &serde_json::to_string(&json!([{
            "msgs": [{"role": "user", "content": "Who are you?"}],
            "sys": "Be brief.",
            "good": {"role": "assistant", "content": "I am Studio."},
            "bad": {"role": "assistant", "content": "I am a model."}
        }]))
        .unwrap(),
    );
    let entry = finetune_studio::data::preference_formats::dataset_info_value("pairs.json", &{
        let mut f = PreferenceFormat::new(PreferenceLayout::ShareGptRanking, Encoding::Json);
        f.mapping.messages = "msgs".into();
        f.mapping.system = "sys".into();
        f.mapping.role_tag = "role".into();
        f.mapping.content_tag = "content".into();
        f.mapping.user_tag = "user".into();
        f.mapping.assistant_tag = "assistant".into();
        f.chosen_key = "good".into();
        f.rejected_key = "bad".into();
        f
    })
    .unwrap();
    let info = write(
        dir.path(),
        "dataset_info.json",
        &serde_json::to_string(&json!({"prefs": entry, "plain": {"file_name": "pairs.json"}}))
            .unwrap(),
    );
    let set = PreferenceSet::load_dataset_info_entry(&info, "prefs").unwrap();
    assert_eq!(set.pairs, vec![expected()]);
    let err = PreferenceSet::load_dataset_info_entry(&info, "plain").unwrap_err();
    assert!(matches!(err, DataError::Entry { .. }));
    assert!(err.to_string().contains("ranking"), "{err}");
}

#[test]
fn bad_records_are_refused_naming_file_record_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.jsonl",
        &lines(&[
            json!({"prompt": "q", "chosen": "a", "rejected": "b"}),
            json!({"prompt": "q", "chosen": "a", "rejected": 7}),
        ]),
    );
    let msg = PreferenceSet::load(&path).unwrap_err().to_string();
    assert!(
        msg.contains("bad.jsonl")
            && msg.contains("record 1")
            && msg.contains("rejected")
            && msg.contains("line 2"),
        "{msg}"
    );
    let path = write(
        dir.path(),
        "sft.jsonl",
        &lines(&[json!({"prompt": "q", "completion": "a"})]),
    );
    let msg = PreferenceSet::load(&path).unwrap_err().to_string();
    assert!(msg.contains("sft.jsonl") && msg.contains("chosen"), "{msg}");
    let path = write(
        dir.path(),
        "role.jsonl",
        &lines(&[json!({
            "prompt": [{"role": "wizard", "content": "q"}], "chosen": "a", "rejected": "b"
        })]),
    );
    let msg = PreferenceSet::load(&path).unwrap_err().to_string();
    assert!(
        msg.contains("record 0") && msg.contains("wizard") && msg.contains("prompt[0]"),
        "{msg}"
    );
    let path = write(dir.path(), "empty.jsonl", "\n\n");
    assert!(matches!(
        PreferenceSet::load(&path),
        Err(DataError::Empty { .. })
    ));
    // Readable but invalid pairs load, with problems that mark them invalid.
    let path = write(
        dir.path(),
        "invalid.jsonl",
        &lines(&[
            json!({"prompt": "q", "chosen": "a", "rejected": "b"}),
            json!({"prompt": "q", "chosen": "  ", "rejected": "b"}),
        ]),
    );
    let set = PreferenceSet::load(&path).unwrap();
    assert_eq!(set.invalid_pairs(), vec![1]);
    let p = &set.problems()[0];
    assert_eq!((p.record, p.line), (Some(1), Some(2)));
    assert!(p.to_string().contains("invalid.jsonl"), "{p}");
}

/// `dataset validate` counts invalid pairs (exit 1); `dataset convert --to
/// llamafactory-sharegpt` writes the pairs and prints the dataset_info.json entry, with
/// which the written file loads back as the same pairs.
#[test]
fn the_dataset_command_validates_and_converts_preference_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(
        dir.path(),
        "pairs.jsonl",
        &lines(&[
            json!({"prompt": "Who are you?", "chosen": "I am Studio.", "rejected": "I am a model."}),
            json!({"prompt": "q", "chosen": "", "rejected": "b"}),
        ]),
    );
    let bin = env!("CARGO_BIN_EXE_finetune-studio");
    let out = std::process::Command::new(bin)
        .args(["dataset", "validate"])
        .arg(&src)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("pairs.jsonl:2: record 1, field `chosen`"),
        "{stdout}"
    );

    let target = dir.path().join("lf.json");
    let out = std::process::Command::new(bin)
        .args(["dataset", "convert"])
        .arg(&src)
        .args(["--to", "llamafactory-sharegpt", "--out"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["lf"]["ranking"], json!(true));
    let info_path = dir.path().join("dataset_info.json");
    std::fs::write(&info_path, serde_json::to_string(&info).unwrap()).unwrap();
    let back = PreferenceSet::load_dataset_info_entry(&info_path, "lf").unwrap();
    assert_eq!(back.pairs, PreferenceSet::load(&src).unwrap().pairs);
}

/// `dataset pairs` turns instruction records into pairs: the record's answer chosen, the
/// model's own greedy answer rejected, with who wrote it; the file reads back as TRL's
/// message layout.
#[test]
fn the_dataset_pairs_command_collects_rejected_replies_from_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let mdir = finetune_studio::testkit::write_tiny_model(
        &dir.path().join("model"),
        finetune_studio::model::config::Architecture::Llama,
        3,
    )
    .unwrap();
    let data = finetune_studio::testkit::write_echo_dataset(dir.path()).unwrap();
    let out = dir.path().join("pairs.jsonl");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_finetune-studio"))
        .args(["dataset", "pairs"])
        .arg(&data)
        .arg("--model")
        .arg(&mdir)
        .args(["--max-new-tokens", "6", "--out"])
        .arg(&out)
        .env("FINETUNE_STUDIO_HOME", dir.path().join("home"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let set = PreferenceSet::load(&out).unwrap();
    assert_eq!(set.format().layout, PreferenceLayout::TrlConversational);
    assert_eq!(set.len(), 24);
    let p = &set.pairs[0];
    assert_eq!(p.prompt[0].content, "say alpha 0");
    assert_eq!(p.chosen[0].content, "alpha alpha alpha");
    assert_ne!(p.rejected[0].content, p.chosen[0].content);
    assert_eq!(p.meta["models"]["chosen"], json!("dataset data.jsonl"));
    assert_eq!(p.meta["adapters"]["rejected"], Value::Null);
    assert_eq!(p.meta["sampling"]["temperature"], json!(0.0));
    assert_eq!(p.meta["sampling"]["max_new_tokens"], json!(6));
    assert!(p.meta["seed"].is_u64());
    assert!(
        set.problems().iter().all(|x| !x.is_error()),
        "{:?}",
        set.problems()
    );
}
