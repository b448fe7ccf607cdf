//! Property test: random conversations round-trip through every format that can express
//! them. proptest is not a dependency of this crate, so the cases come from a seeded
//! generator (rand); a failure prints the seed and the case.

use finetune_studio::data::{self, Conversation, Dataset, Format, Message, Role};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn text(rng: &mut StdRng, allow_empty: bool) -> String {
    const PIECES: &[&str] = &[
        "hello",
        " ",
        "\n",
        "\"quoted\"",
        ",",
        "{{name}}",
        "日本語",
        "emoji 🦀",
        "\\",
        "\t",
        "a,b",
        "[1, 2]",
        "{\"k\": 1}",
        "\r\n",
        "x",
    ];
    let n = rng.random_range(if allow_empty { 0..6 } else { 1..6 });
    let s: String = (0..n)
        .map(|_| PIECES[rng.random_range(0..PIECES.len())])
        .collect();
    if !allow_empty && s.trim().is_empty() {
        return "t".into();
    }
    s
}

/// A random conversation; `alpaca` restricts it to alternating user/assistant turns.
fn conversation(rng: &mut StdRng, alpaca: bool) -> Conversation {
    let pairs = rng.random_range(1..4);
    let mut messages = Vec::new();
    for _ in 0..pairs {
        messages.push(Message::new(Role::User, text(rng, false)));
        if !alpaca && rng.random_bool(0.3) {
            messages.push(Message::new(Role::FunctionCall, text(rng, false)));
            messages.push(Message::new(Role::Tool, text(rng, false)));
        }
        messages.push(Message::new(Role::Assistant, text(rng, false)));
    }
    let mut meta = serde_json::Map::new();
    if rng.random_bool(0.5) {
        meta.insert("id".into(), serde_json::Value::String(text(rng, false)));
    }
    Conversation {
        system: rng.random_bool(0.5).then(|| text(rng, false)),
        messages,
        tools: (!alpaca && rng.random_bool(0.3)).then(|| "[{\"name\": \"f\"}]".to_string()),
        meta,
    }
}

#[test]
fn random_conversations_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        for (name, ext, alpaca) in [
            ("alpaca", "json", true),
            ("alpaca-jsonl", "jsonl", true),
            ("csv", "csv", true),
            ("alpaca-parquet", "parquet", true),
            ("sharegpt", "json", false),
            ("openai", "jsonl", false),
            ("openai-json", "json", false),
            ("parquet", "parquet", false),
            ("sharegpt-parquet", "parquet", false),
        ] {
            let format: Format = name.parse().unwrap();
            let records: Vec<Conversation> = (0..rng.random_range(1..6))
                .map(|_| conversation(&mut rng, alpaca))
                .collect();
            let ds = Dataset::from_records(records.clone(), format);
            let path = dir.path().join(format!("s{seed}.{name}.{ext}"));
            ds.write(&path, Some(format))
                .unwrap_or_else(|e| panic!("seed {seed} {name}: {e}"));
            let back = data::load(&path, Some(format))
                .unwrap_or_else(|e| panic!("seed {seed} {name}: {e}"));
            assert_eq!(back.len(), records.len(), "seed {seed} {name}");
            for (a, b) in records.iter().zip(back.records()) {
                assert_eq!(a.messages, b.messages, "seed {seed} {name}: {a:#?}");
                assert_eq!(a.system, b.system, "seed {seed} {name}");
                assert_eq!(a.tools, b.tools, "seed {seed} {name}");
                let id = |c: &Conversation| c.meta.get("id").cloned();
                assert_eq!(id(a), id(b), "seed {seed} {name}");
            }
            // Auto-detection finds the same layout.
            let auto = data::load(&path, None).unwrap();
            assert_eq!(auto.format().schema, format.schema, "seed {seed} {name}");
            assert_eq!(auto.len(), records.len());
        }
    }
}

#[test]
fn edited_records_write_back_cleanly() {
    // Hints written by a reader stay aligned when turns are edited through the API.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.jsonl");
    std::fs::write(
        &p,
        "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"value\": \"hi\"}], \"loss_weight\": 0.0}, {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"value\": \"yo\"}], \"loss_weight\": 1.0}]}\n",
    )
    .unwrap();
    let mut ds = data::load(&p, None).unwrap();
    ds.apply(data::Edit::InsertTurn {
        index: 0,
        turn: 0,
        message: Message::new(Role::System, "sys"),
    })
    .unwrap();
    ds.apply(data::Edit::SetTurnContent {
        index: 0,
        turn: 2,
        content: "changed".into(),
    })
    .unwrap();
    ds.save(&p, None).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&p).unwrap().trim()).unwrap();
    let m = &v["messages"];
    assert_eq!(m[0]["role"], "system");
    assert_eq!(m[1]["content"][0]["value"], "hi");
    assert_eq!(m[1]["loss_weight"], 0.0);
    assert_eq!(
        m[2]["content"],
        serde_json::json!([{"type": "text", "value": "changed"}])
    );
    assert_eq!(m[2]["loss_weight"], 1.0);
}
