//! Saving and crash recovery: atomic save with a backup, dirty tracking, and the autosave
//! recovery file offered back after a crash.

use finetune_studio::data::{self, Dataset, Edit, Message, Role};

#[test]
fn save_keeps_a_backup_and_recovery_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.json");
    let original = r#"[{"instruction": "q", "input": "", "output": "a", "id": 7}]"#;
    std::fs::write(&p, original).unwrap();
    let mut ds = data::load(&p, None).unwrap();
    ds.apply(Edit::SetTurnContent {
        index: 0,
        turn: 1,
        content: "b".into(),
    })
    .unwrap();
    ds.apply(Edit::InsertRecord {
        index: 1,
        record: data::Conversation {
            messages: vec![
                Message::new(Role::User, "q2"),
                Message::new(Role::Assistant, "a2"),
            ],
            ..Default::default()
        },
    })
    .unwrap();
    assert!(ds.is_dirty());
    let rp = ds.autosave().unwrap().unwrap();
    assert_eq!(Dataset::find_recovery(&p), Some(rp.clone()));
    drop(ds); // the "crash": the edits exist only in the recovery file

    let mut back = Dataset::recover(&rp).unwrap();
    assert!(back.is_dirty());
    assert_eq!(back.len(), 2);
    assert_eq!(back.records()[0].messages[1].content, "b");
    assert_eq!(back.path(), Some(p.as_path()));
    back.save(&p, None).unwrap();
    assert!(!back.is_dirty());
    assert_eq!(
        Dataset::find_recovery(&p),
        None,
        "saving removes the recovery file"
    );
    assert_eq!(
        std::fs::read_to_string(data::dataset::backup_path(&p)).unwrap(),
        original
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(saved[0]["output"], "b");
    assert_eq!(saved[0]["id"], 7);
    assert_eq!(saved[1]["instruction"], "q2");
    // No temporary files left behind: the dataset and its backup, nothing else.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names
            .iter()
            .all(|n| !finetune_studio::fsio::is_temp_name(n)),
        "{names:?}"
    );
    assert_eq!(names, ["d.json", "d.json.bak"]);

    // Undo back to the saved state is clean again; a clean dataset writes no recovery file.
    back.apply(Edit::DeleteRecord { index: 1 }).unwrap();
    assert!(back.is_dirty());
    back.undo();
    assert!(!back.is_dirty());
    assert_eq!(back.autosave().unwrap(), None);
}

#[test]
fn split_parts_save() {
    let ds = data::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/datasets/llamafactory_identity.json"),
        None,
    )
    .unwrap();
    let (train, eval) = ds.split(data::split::EvalSize::Ratio(0.1), 42);
    assert_eq!((train.len(), eval.len()), (82, 9));
    let dir = tempfile::tempdir().unwrap();
    eval.write(&dir.path().join("eval.json"), None).unwrap();
    assert_eq!(
        data::load(&dir.path().join("eval.json"), None)
            .unwrap()
            .len(),
        9
    );
}

#[test]
fn stats_search_and_filters() {
    use data::search::{self, Flag, LengthKind, Query};
    let recs = [
        (
            "Give three tips for staying healthy.",
            "Eat well, sleep, move.",
        ),
        (
            "Give three tips for staying healthy.",
            "Eat well, sleep, move.",
        ),
        ("Translate 'hello' to French", ""),
        (
            "Write a long story",
            "word word word word word word word word word word word word",
        ),
    ];
    let convs = recs
        .iter()
        .map(|(q, a)| data::Conversation {
            messages: vec![
                Message::new(Role::User, *q),
                Message::new(Role::Assistant, *a),
            ],
            ..Default::default()
        })
        .collect();
    let ds = Dataset::from_records(convs, data::Format::ALPACA);
    let st = data::stats::compute(&ds, &data::WhitespaceCounter, 10);
    assert_eq!(st.total_tokens, vec![10, 10, 4, 16]);
    assert_eq!(st.over_max, vec![3]);
    assert_eq!(st.exact_duplicates, vec![vec![0, 1]]);
    assert_eq!(st.near_duplicates, vec![vec![0, 1]]);
    assert_eq!(st.role_counts["user"], 4);
    assert_eq!(st.turn_counts[&2], 4);
    assert_eq!(st.empty_fields.len(), 1);
    assert_eq!(st.diversity.distinct_leading_pairs, 3);
    assert_eq!(st.total_histogram.counts.iter().sum::<usize>(), 4);
    assert_eq!(search::filter(&ds, &st, Flag::Duplicate), vec![1]);
    assert_eq!(search::filter(&ds, &st, Flag::TooLong), vec![3]);
    assert_eq!(search::filter(&ds, &st, Flag::Empty), vec![2]);
    assert_eq!(search::filter(&ds, &st, Flag::Invalid), vec![2]);
    assert_eq!(
        search::sort_by_length(&st, LengthKind::Total, true),
        vec![3, 0, 1, 2]
    );
    assert_eq!(
        search::search(&ds, &Query::substring("healthy", true)),
        vec![0, 1]
    );
    assert_eq!(
        search::search(&ds, &Query::substring("FRENCH", false)),
        vec![2]
    );
    assert!(search::search(&ds, &Query::substring("FRENCH", true)).is_empty());
    assert_eq!(
        search::search(&ds, &Query::regex(r"^Write", true).unwrap()),
        vec![3]
    );
}
