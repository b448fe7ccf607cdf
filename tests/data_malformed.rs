//! Malformed inputs the tests write themselves: each gives the expected problem kind at the
//! expected line, record and field, loading goes on past it, and nothing panics.

use std::path::{Path, PathBuf};

use finetune_studio::data::{self, DataError, Dataset, Format, Problem, ProblemKind};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn problems_of(ds: &Dataset, kind: ProblemKind) -> Vec<Problem> {
    ds.problems()
        .into_iter()
        .filter(|p| p.kind == kind)
        .collect()
}

#[test]
fn jsonl_bad_line_is_flagged_and_loading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "a.jsonl",
        b"{\"instruction\": \"a\", \"output\": \"b\"}\n\n{\"instruction\": \"c\", \"output\": }\n{\"instruction\": \"d\", \"output\": \"e\"}\n",
    );
    let ds = data::load(&p, None).unwrap();
    assert_eq!(ds.len(), 3, "the bad record is kept, not dropped");
    let ps = problems_of(&ds, ProblemKind::InvalidJson);
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].line, Some(3));
    assert_eq!(ps[0].record, Some(1));
    assert_eq!(ps[0].file, p);
    assert!(ps[0].message.contains("column"), "{}", ps[0].message);
    assert_eq!(ds.records()[2].messages[1].content, "e");
    assert_eq!(ds.invalid_records(), vec![1]);
    // Saving refuses to silently drop or mangle the broken record.
    let err = ds.write(&dir.path().join("out.jsonl"), None).unwrap_err();
    assert!(matches!(err, DataError::Record { record: 1, .. }), "{err}");
}

#[test]
fn json_array_bad_record_has_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "a.json",
        b"[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n  {\"instruction\": \"c\",\n   \"output\": tru},\n  {\"instruction\": \"d\", \"output\": \"e\"}\n]\n",
    );
    let ds = data::load(&p, None).unwrap();
    assert_eq!(ds.len(), 3);
    let ps = problems_of(&ds, ProblemKind::InvalidJson);
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].record, Some(1));
    assert_eq!(ps[0].line, Some(4), "{}", ps[0]);
}

#[test]
fn truncated_array_keeps_complete_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "t.json",
        b"[{\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\": \"c\", \"outp",
    );
    let ds = data::load(&p, None).unwrap();
    assert_eq!(ds.len(), 2);
    let ps = problems_of(&ds, ProblemKind::InvalidJson);
    assert_eq!((ps[0].record, ps[0].line), (Some(1), Some(2)));
}

#[test]
fn wrong_types_missing_and_empty_fields() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "w.jsonl",
        br#"{"instruction": 5, "output": "x"}
{"instruction": "q"}
{"instruction": "", "input": "", "output": ""}
{"instruction": "q", "output": "a", "history": "nope"}
[1, 2]
"#,
    );
    let ds = data::load(&p, None).unwrap();
    assert_eq!(ds.len(), 5);
    let all = ds.problems();
    let find = |rec: usize, kind: ProblemKind| {
        all.iter()
            .find(|p| p.record == Some(rec) && p.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} for record {rec}: {all:#?}"))
    };
    let p0 = find(0, ProblemKind::WrongType);
    assert_eq!(
        (p0.field.as_deref(), p0.line),
        (Some("instruction"), Some(1))
    );
    assert_eq!(
        find(1, ProblemKind::MissingField).field.as_deref(),
        Some("output")
    );
    let empties: Vec<_> = all
        .iter()
        .filter(|p| p.record == Some(2) && p.kind == ProblemKind::EmptyField)
        .map(|p| p.field.clone().unwrap())
        .collect();
    assert_eq!(empties, vec!["instruction", "output"]);
    assert_eq!(
        find(3, ProblemKind::WrongType).field.as_deref(),
        Some("history")
    );
    assert_eq!(find(4, ProblemKind::WrongType).line, Some(5));
    // The wrongly typed value is kept and written back as it was.
    let out = dir.path().join("o.jsonl");
    ds.write(&out, None).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["instruction"], 5);
    assert!(text.lines().nth(4).unwrap().starts_with("[1,2]"));
}

#[test]
fn turns_roles_and_alternation() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "s.json",
        br#"[
{"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]},
{"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}, {"from": "gpt", "value": "c"}]},
{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}]},
{"conversations": [{"from": "human"}, {"value": "x"}]},
{"conversations": "nope"}
]"#,
    );
    let ds = data::load(&p, None).unwrap();
    assert_eq!(ds.len(), 5);
    let all = ds.problems();
    let has = |rec: usize, kind: ProblemKind, field: Option<&str>, line: usize| {
        assert!(
            all.iter().any(|p| p.record == Some(rec)
                && p.kind == kind
                && p.line == Some(line)
                && (field.is_none() || p.field.as_deref() == field)),
            "no {kind:?} {field:?} at record {rec}: {all:#?}"
        )
    };
    has(
        0,
        ProblemKind::UnknownRole,
        Some("conversations[1].from"),
        2,
    );
    has(
        1,
        ProblemKind::NotAlternating,
        Some("conversations[1].value"),
        3,
    );
    has(2, ProblemKind::NoFinalAssistant, None, 4);
    has(
        3,
        ProblemKind::MissingField,
        Some("conversations[0].value"),
        5,
    );
    has(
        3,
        ProblemKind::MissingField,
        Some("conversations[1].from"),
        5,
    );
    has(4, ProblemKind::WrongType, Some("conversations"), 6);
    // The unknown role is written back as it was.
    let out = dir.path().join("o.json");
    ds.write(&out, None).unwrap();
    assert!(std::fs::read_to_string(&out).unwrap().contains("\"robot\""));
}

#[test]
fn invalid_utf8_is_flagged_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes =
        b"{\"instruction\": \"ok\", \"output\": \"fine\"}\n{\"instruction\": \"bad ".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(b"\", \"output\": \"x\"}\n");
    let p = write(dir.path(), "u.jsonl", &bytes);
    let ds = data::load(&p, None).unwrap();
    assert_eq!(ds.len(), 2);
    let ps = problems_of(&ds, ProblemKind::NotUtf8);
    assert_eq!((ps[0].record, ps[0].line), (Some(1), Some(2)));
    assert!(ds.records()[1].messages[0].content.contains('\u{fffd}'));
}

#[test]
fn whole_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "x.json", b"\"just a string\"");
    assert!(matches!(
        data::load(&p, None),
        Err(DataError::Json { line: 1, .. })
    ));
    let p = write(dir.path(), "y.json", br#"[{"foo": 1}]"#);
    assert!(matches!(
        data::load(&p, None),
        Err(DataError::UnknownFormat { .. })
    ));
    assert!(matches!(
        data::load(&dir.path().join("missing.json"), None),
        Err(DataError::Io { .. })
    ));
    let p = write(dir.path(), "z.parquet", b"not parquet");
    assert!(matches!(
        data::load(&p, None),
        Err(DataError::Parquet { .. })
    ));
}

/// A file without records is an error naming it, whatever its format, also through a
/// dataset_info.json entry.
#[test]
fn files_without_records_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty_parquet = Dataset::from_records(Vec::new(), Format::PARQUET)
        .to_bytes(None, Path::new("e.parquet"))
        .unwrap();
    let cases: &[(&str, &[u8], &str)] = &[
        ("none.json", b"", "the file is empty"),
        ("none.csv", b"", "the file is empty"),
        (
            "blank.json",
            b"  \n\t\n",
            "only whitespace or an empty JSON array",
        ),
        (
            "array.json",
            b"[]",
            "only whitespace or an empty JSON array",
        ),
        (
            "spaced.json",
            b"\xEF\xBB\xBF [\n ]\n",
            "only whitespace or an empty JSON array",
        ),
        ("blank.jsonl", b"\n  \n\n", "only blank lines"),
        (
            "header.csv",
            b"instruction,input,output\n",
            "a header and no rows",
        ),
        ("rows.parquet", &empty_parquet, "no rows"),
    ];
    for (name, bytes, what) in cases {
        let p = write(dir.path(), name, bytes);
        let err = data::load(&p, None).unwrap_err();
        assert!(
            matches!(&err, DataError::Empty { path, .. } if *path == p),
            "{name}: {err}"
        );
        assert_eq!(
            err.to_string(),
            format!("{}: contains no records ({what})", p.display())
        );
    }
    write(
        dir.path(),
        "dataset_info.json",
        br#"{"blank": {"file_name": "array.json"}}"#,
    );
    let err =
        data::load_dataset_info_entry(&dir.path().join("dataset_info.json"), "blank").unwrap_err();
    assert!(
        matches!(&err, DataError::Empty { path, .. } if *path == dir.path().join("array.json")),
        "{err}"
    );
}

#[test]
fn csv_rows_have_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "c.csv",
        b"instruction,input,output\nq1,,a1\n\"multi\nline\",,\nq3,i3,a3\n",
    );
    let ds = data::load(&p, None).unwrap();
    assert_eq!(ds.len(), 3);
    let ps = problems_of(&ds, ProblemKind::EmptyField);
    assert_eq!(
        (ps[0].record, ps[0].line, ps[0].field.as_deref()),
        (Some(1), Some(3), Some("output"))
    );
    assert_eq!(ds.records()[2].messages[0].content, "q3\ni3");
}

#[test]
fn garbage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let samples: &[&[u8]] = &[
        b"[",
        b"[,]",
        b"[{]",
        b"[{}",
        b"[\"\\",
        b"{\n{\n",
        b"]]]",
        b"[1,2,3]",
        b"[null]",
        b"[{\"messages\": [null, 3, {\"role\": 5, \"content\": {}}]}]",
        b"[{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\"}]}]}]",
        b"[{\"instruction\": \"a\", \"output\": \"b\", \"history\": [[1, 2], \"x\"]}]",
        b"[{\"conversations\": [], \"tools\": {\"a\": 1}}]",
        b"\xef\xbb\xbf[{\"instruction\": \"bom\", \"output\": \"ok\"}]",
    ];
    for (i, s) in samples.iter().enumerate() {
        let p = write(dir.path(), &format!("g{i}.json"), s);
        if let Ok(ds) = data::load(&p, None) {
            let _ = ds.problems();
            let _ = ds.write(&dir.path().join(format!("o{i}.json")), None);
            let _ = data::stats::compute(&ds, &data::ByteCounter::default(), 10);
        }
    }
}
