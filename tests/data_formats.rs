//! Every dataset in tests/fixtures/datasets (copies of ../shared/datasets) loads with the right record counts and roles, saves
//! back losslessly in its own format, and converts between formats.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use finetune_studio::data::{self, DataError, Dataset, Format, ProblemKind, Role, Schema};
use serde_json::Value;

fn shared(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/datasets")
        .join(name)
}

fn roles(ds: &Dataset) -> BTreeMap<Role, usize> {
    let mut m = BTreeMap::new();
    for c in ds.records() {
        for t in &c.messages {
            *m.entry(t.role).or_insert(0) += 1;
        }
    }
    m
}

fn errors(ds: &Dataset) -> Vec<String> {
    ds.problems()
        .into_iter()
        .filter(|p| p.is_error())
        .map(|p| p.to_string())
        .collect()
}

/// Parses a JSON or JSONL file into one list of values.
fn json_values(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    if path.extension().is_some_and(|e| e == "jsonl") {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    } else {
        serde_json::from_str::<Vec<Value>>(&text).unwrap()
    }
}

/// Saves in the loaded format and checks the records are the same JSON as the source.
fn assert_lossless(ds: &mut Dataset, src: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(src.file_name().unwrap());
    ds.save(&out, None).unwrap();
    assert_eq!(json_values(src), json_values(&out), "{}", src.display());
    assert!(!ds.is_dirty());
}

#[test]
fn alpaca_demos() {
    for (name, n) in [
        ("llamafactory_alpaca_en_demo.json", 999),
        ("llamafactory_alpaca_zh_demo.json", 1000),
        ("llamafactory_identity.json", 91),
    ] {
        let p = shared(name);
        let mut ds = data::load(&p, None).unwrap();
        assert_eq!(ds.format(), Format::ALPACA, "{name}");
        assert_eq!(ds.len(), n, "{name}");
        let r = roles(&ds);
        assert_eq!(r.get(&Role::User), Some(&n), "{name}");
        assert_eq!(r.get(&Role::Assistant), Some(&n), "{name}");
        assert_eq!(r.len(), 2);
        assert!(
            errors(&ds).is_empty(),
            "{name}: {:?}",
            &errors(&ds)[..errors(&ds).len().min(5)]
        );
        assert_lossless(&mut ds, &p);
    }
}

#[test]
fn alpaca_input_is_joined_like_llamafactory() {
    let ds = data::load(&shared("llamafactory_alpaca_en_demo.json"), None).unwrap();
    let raw = json_values(&shared("llamafactory_alpaca_en_demo.json"));
    let (i, r) = raw
        .iter()
        .enumerate()
        .find(|(_, r)| !r["input"].as_str().unwrap().is_empty())
        .unwrap();
    let want = format!(
        "{}\n{}",
        r["instruction"].as_str().unwrap(),
        r["input"].as_str().unwrap()
    );
    assert_eq!(ds.records()[i].messages[0].content, want);
    assert_eq!(
        ds.records()[i].messages[1].content,
        r["output"].as_str().unwrap()
    );
}

#[test]
fn fastchat_sharegpt() {
    let p = shared("fastchat_dummy_conversation.json");
    let mut ds = data::load(&p, None).unwrap();
    assert_eq!(ds.format(), Format::SHAREGPT);
    assert_eq!(ds.len(), 500);
    let r = roles(&ds);
    assert_eq!(r[&Role::User], 1000);
    assert_eq!(r[&Role::Assistant], 1000);
    assert_eq!(ds.records()[0].meta["id"], "identity_0");
    assert!(errors(&ds).is_empty());
    assert_lossless(&mut ds, &p);
}

#[test]
fn glaive_toolcalls() {
    let p = shared("llamafactory_glaive_toolcall_en_demo.json");
    let mut ds = data::load(&p, None).unwrap();
    assert_eq!(ds.format().schema, Schema::ShareGpt);
    assert_eq!(ds.len(), 300);
    let r = roles(&ds);
    assert_eq!(r[&Role::User], 746);
    assert_eq!(r[&Role::Assistant], 746);
    assert_eq!(r[&Role::FunctionCall], 211);
    assert_eq!(r[&Role::Tool], 211);
    assert!(ds.records().iter().all(|c| c.tools.is_some()));
    let chat = ds
        .records()
        .iter()
        .find(|c| c.messages.iter().any(|m| m.role == Role::FunctionCall))
        .unwrap()
        .to_chat_messages();
    assert!(chat.iter().any(|(r, _)| *r == "tool"));
    assert!(chat
        .iter()
        .all(|(r, _)| ["user", "assistant", "tool"].contains(r)));
    assert!(errors(&ds).is_empty(), "{:?}", errors(&ds).first());
    assert_lossless(&mut ds, &p);
}

#[test]
fn v1_openai_parts() {
    let p = shared("llamafactory_v1_sft_demo.jsonl");
    let mut ds = data::load(&p, None).unwrap();
    assert_eq!(ds.format(), Format::OPENAI);
    assert_eq!(ds.len(), 500);
    let r = roles(&ds);
    assert_eq!((r[&Role::User], r[&Role::Assistant]), (500, 500));
    assert_eq!(ds.records()[0].messages[0].content, "hi");
    assert!(ds.records()[0].messages[1].content.contains("{{name}}"));
    assert!(errors(&ds).is_empty());
    assert_lossless(&mut ds, &p);
}

#[test]
fn placeholders_are_a_dataset_step() {
    let mut ds = data::load(&shared("llamafactory_identity.json"), None).unwrap();
    let map = [
        ("{{name}}".to_string(), "Studio".to_string()),
        ("{{author}}".to_string(), "Us".to_string()),
    ];
    let n = ds.replace_placeholders(&map);
    assert!(n > 80, "{n}");
    assert!(ds
        .records()
        .iter()
        .flat_map(|c| c.texts())
        .all(|t| !t.contains("{{name}}") && !t.contains("{{author}}")));
    assert!(ds.records()[0].messages[1]
        .content
        .contains("I am Studio, an AI assistant developed by Us"));
}

#[test]
fn dataset_info_lists_and_loads_entries() {
    let info = shared("llamafactory_dataset_info.json");
    let entries = data::list_dataset_info_entries(&info).unwrap();
    assert_eq!(entries.len(), 104);
    let glaive = entries
        .iter()
        .find(|e| e.name == "glaive_toolcall_en_demo")
        .unwrap();
    assert_eq!(glaive.formatting, "sharegpt");

    // The entry file names have no `llamafactory_` prefix: copy them under the expected names.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("dataset_info.json");
    std::fs::copy(&info, &local).unwrap();
    for n in ["identity", "alpaca_en_demo", "glaive_toolcall_en_demo"] {
        std::fs::copy(
            shared(&format!("llamafactory_{n}.json")),
            dir.path().join(format!("{n}.json")),
        )
        .unwrap();
    }
    match data::load(&local, None) {
        Err(DataError::NeedsEntry { entries, .. }) => {
            assert_eq!(
                entries,
                vec!["identity", "alpaca_en_demo", "glaive_toolcall_en_demo"]
            )
        }
        other => panic!("expected NeedsEntry, got {other:?}"),
    }
    let ds = data::load_dataset_info_entry(&local, "glaive_toolcall_en_demo").unwrap();
    assert_eq!(ds.len(), 300);
    assert_eq!(roles(&ds)[&Role::FunctionCall], 211);
    assert!(ds.file_problems.is_empty());
    let ds = data::load(&dir.path().join("dataset_info.json#identity"), None).unwrap();
    assert_eq!(ds.len(), 91);
    assert_eq!(ds.path(), Some(dir.path().join("identity.json").as_path()));

    // Missing file: the error names the resolved path.
    let err = data::load_dataset_info_entry(&local, "alpaca_zh_demo")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("alpaca_zh_demo.json") && err.contains("does not exist"),
        "{err}"
    );
    // Hub-only entry.
    let err = data::load_dataset_info_entry(&local, "lima")
        .unwrap_err()
        .to_string();
    assert!(err.contains("hf_hub_url"), "{err}");
    assert!(matches!(
        data::load_dataset_info_entry(&local, "nope"),
        Err(DataError::NoSuchEntry { .. })
    ));
}

#[test]
fn dataset_info_unknown_keys_warn() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        shared("llamafactory_glaive_toolcall_en_demo.json"),
        dir.path().join("tools.json"),
    )
    .unwrap();
    let info = dir.path().join("dataset_info.json");
    std::fs::write(
        &info,
        r#"{"t": {"file_name": "tools.json", "format": "sharegpt", "formatting": "sharegpt",
                  "columns": {"messages": "conversations", "tool": "tools"}}}"#,
    )
    .unwrap();
    let ds = data::load_dataset_info_entry(&info, "t").unwrap();
    let w: Vec<_> = ds
        .file_problems
        .iter()
        .filter(|p| p.kind == ProblemKind::UnknownKey)
        .collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].message.contains("formatting"));
    assert_eq!(w[0].field.as_deref(), Some("t.format"));
    assert_eq!(w[1].field.as_deref(), Some("t.columns.tool"));
    assert!(!w[0].is_error());
    assert_eq!(ds.len(), 300);
}

#[test]
fn dataset_info_mapping_applies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("d.jsonl"),
        "{\"q\": \"hi\", \"a\": \"hello\", \"sys\": \"s\"}\n{\"msgs\": 1}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("c.json"),
        r#"[{"chat": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}]"#,
    )
    .unwrap();
    let info = dir.path().join("dataset_info.json");
    std::fs::write(
        &info,
        r#"{"a": {"file_name": "d.jsonl", "columns": {"prompt": "q", "response": "a", "system": "sys"}},
            "c": {"file_name": "c.json", "formatting": "sharegpt", "columns": {"messages": "chat"},
                  "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}"#,
    )
    .unwrap();
    let ds = data::load_dataset_info_entry(&info, "a").unwrap();
    assert_eq!(ds.records()[0].system.as_deref(), Some("s"));
    assert_eq!(ds.records()[0].messages[1].content, "hello");
    assert_eq!(ds.invalid_records(), vec![1]);
    let ds = data::load_dataset_info_entry(&info, "c").unwrap();
    assert_eq!(ds.records()[0].messages[0].role, Role::User);
    assert_eq!(ds.records()[0].messages[1].content, "y");
}

#[test]
fn conversions_between_formats() {
    let dir = tempfile::tempdir().unwrap();
    for src in [
        "llamafactory_alpaca_en_demo.json",
        "fastchat_dummy_conversation.json",
        "llamafactory_glaive_toolcall_en_demo.json",
        "llamafactory_v1_sft_demo.jsonl",
    ] {
        let ds = data::load(&shared(src), None).unwrap();
        let alpaca_ok = ds
            .records()
            .iter()
            .all(|c| data::formats::alpaca::expressible(c).is_ok());
        for (name, ext) in [
            ("alpaca", "json"),
            ("sharegpt", "json"),
            ("openai", "jsonl"),
            ("csv", "csv"),
            ("parquet", "parquet"),
        ] {
            let f: Format = name.parse().unwrap();
            let out = dir.path().join(format!("{src}.{name}.{ext}"));
            let res = ds.write(&out, Some(f));
            if f.schema == Schema::Alpaca && !alpaca_ok {
                assert!(res.is_err(), "{src} -> {name}");
                continue;
            }
            res.unwrap_or_else(|e| panic!("{src} -> {name}: {e}"));
            let back = data::load(&out, None).unwrap_or_else(|e| panic!("{src} -> {name}: {e}"));
            assert_eq!(back.len(), ds.len(), "{src} -> {name}");
            for (a, b) in ds.records().iter().zip(back.records()) {
                assert_eq!(a.system, b.system, "{src} -> {name}");
                assert_eq!(a.messages, b.messages, "{src} -> {name}");
                assert_eq!(a.tools, b.tools, "{src} -> {name}");
            }
        }
    }
}
