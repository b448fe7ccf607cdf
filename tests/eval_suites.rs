//! Eval suites: every check on a passing and a failing reply, the errors of malformed suite
//! files (file, line and cause named), the built-in suite, and a suite run end to end on a
//! tiny random model, with and without an adapter, through the library and `eval --suite`.
//! A random model writes junk, so the run is judged on the report's structure and on checks
//! whose outcome does not depend on the reply.

use std::sync::atomic::AtomicBool;

use finetune_studio::eval::{
    self, Check, PromptResult, RunError, RunOptions, Suite, SuiteError, SuiteInput, CHECK_TYPES,
};
use finetune_studio::infer::StopReason;
use finetune_studio::model::config::Architecture;
use finetune_studio::testkit::{write_tiny_adapter, write_tiny_model};

fn check(json: &str) -> Check {
    let c: Check = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    c.validate().unwrap_or_else(|e| panic!("{json}: {e}"));
    c
}

/// (check, a reply that passes, a reply that fails), at least one per check type.
const CASES: &[(&str, &str, &str)] = &[
    (
        r#"{"type": "contains", "text": "Paris"}"#,
        "It is Paris.",
        "It is paris.",
    ),
    (
        r#"{"type": "contains", "text": "Paris", "case_sensitive": false}"#,
        "it is PARIS",
        "It is Lyon.",
    ),
    (
        r#"{"type": "not_contains", "text": "rain"}"#,
        "Grey skies.",
        "Heavy rain.",
    ),
    (
        r#"{"type": "not_contains", "text": "rain", "case_sensitive": false}"#,
        "Grey skies.",
        "RAIN all day.",
    ),
    (
        r#"{"type": "regex", "pattern": "\\b12\\b"}"#,
        "The answer is 12.",
        "The answer is 120.",
    ),
    (r#"{"type": "exact", "text": "OK"}"#, "  OK\n", "OK."),
    (
        r#"{"type": "exact", "text": "OK", "case_sensitive": false}"#,
        "ok",
        "okay",
    ),
    (
        r#"{"type": "starts_with", "text": "Yes"}"#,
        "\n Yes, it is.",
        "Well, yes.",
    ),
    (
        r#"{"type": "ends_with", "text": "Stay well."}"#,
        "Drink water. Stay well.  ",
        "Stay well. Bye.",
    ),
    (
        r#"{"type": "valid_json"}"#,
        "```json\n{\"a\": [1, 2]}\n```",
        "{\"a\": [1, 2}",
    ),
    (
        r#"{"type": "valid_json"}"#,
        " [1, 2, 3] ",
        "Sure! Here it is: [1, 2, 3]",
    ),
    (
        r#"{"type": "json_schema", "schema": {"type": "object", "required": ["name", "age"], "properties": {"name": {"type": "string"}, "age": {"type": "number"}}}}"#,
        r#"{"name": "Ada", "age": 36}"#,
        r#"{"name": "Ada", "age": "36"}"#,
    ),
    (
        r#"{"type": "json_schema", "schema": {"type": "array", "items": {"enum": ["yes", "no"]}}}"#,
        r#"["yes", "no", "yes"]"#,
        r#"["yes", "maybe"]"#,
    ),
    (
        r#"{"type": "json_schema", "schema": {"type": "object", "required": ["answer"]}}"#,
        r#"{"answer": 1}"#,
        "not json at all",
    ),
    (
        r#"{"type": "word_count", "min": 3, "max": 5}"#,
        "one two three four",
        "one two",
    ),
    (r#"{"type": "word_count", "max": 3}"#, "a b - c", "a b c d"),
    (
        r#"{"type": "sentence_count", "min": 2, "max": 2}"#,
        "One. Two!",
        "Just one, really.",
    ),
    (
        r#"{"type": "bullet_count", "min": 3}"#,
        "List:\n- a\n* b\n+ c",
        "1. a\n2. b\n3. c",
    ),
    (
        r#"{"type": "paragraph_count", "min": 2, "max": 2}"#,
        "First.\n\nSecond.",
        "First.\nStill first.",
    ),
    (
        r#"{"type": "lowercase"}"#,
        "all lower, 123.",
        "Not all lower.",
    ),
    (r#"{"type": "lowercase"}"#, "ok", "123 !!"),
    (r#"{"type": "uppercase"}"#, "HELLO THERE!", "HELLO There"),
    (r#"{"type": "no_commas"}"#, "No commas here.", "One, two."),
];

#[test]
fn every_check_passes_and_fails() {
    let mut seen = std::collections::BTreeSet::new();
    for (json, good, bad) in CASES {
        let c = check(json);
        seen.insert(c.kind());
        let pass = c.evaluate(good);
        assert!(pass.passed, "{json} on {good:?}: {}", pass.reason);
        assert!(!pass.reason.is_empty());
        let fail = c.evaluate(bad);
        assert!(!fail.passed, "{json} on {bad:?}: {}", fail.reason);
        assert!(!fail.reason.is_empty());
    }
    let all: std::collections::BTreeSet<&str> = CHECK_TYPES.iter().copied().collect();
    assert_eq!(seen, all, "every check type has a case");
}

#[test]
fn reasons_say_what_was_found() {
    let r = check(r#"{"type": "word_count", "max": 3}"#).evaluate("a b c d e");
    assert_eq!(r.reason, "5 words, expected at most 3");
    let r = check(r#"{"type": "contains", "text": "Paris"}"#).evaluate("Lyon");
    assert_eq!(r.reason, "\"Paris\" not found");
    let r = check(r#"{"type": "no_commas"}"#).evaluate("a, b, c");
    assert_eq!(r.reason, "2 commas");
    let r = check(r#"{"type": "uppercase"}"#).evaluate("ABc");
    assert_eq!(r.reason, "has lower-case 'c'");
    let r = check(r#"{"type": "json_schema", "schema": {"type": "object", "properties": {"age": {"type": "number"}}}}"#)
        .evaluate(r#"{"age": "x"}"#);
    assert!(!r.passed);
    assert!(r.reason.contains("/age"), "{}", r.reason);
}

#[test]
fn checks_serialize_as_written() {
    for (json, _, _) in CASES {
        let c = check(json);
        let back: Check = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c, "{json}");
        assert_eq!(serde_json::to_value(&c).unwrap()["type"], c.kind());
    }
}

fn parse_err(text: &str) -> String {
    match Suite::parse(text, "s.jsonl") {
        Ok(s) => panic!("parsed {} items from {text:?}", s.items.len()),
        Err(e) => e.to_string(),
    }
}

const OK_LINE: &str = r#"{"id": "a", "prompt": "Hi", "checks": [{"type": "no_commas"}]}"#;

#[test]
fn malformed_suites_name_the_file_line_and_cause() {
    let cases: &[(&str, &str)] = &[
        ("{not json", "not a JSON object"),
        ("[1, 2]", "expected a JSON object"),
        (r#"{"id": "b", "prompt": "Hi"}"#, "missing field `checks`"),
        (
            r#"{"id": "b", "prompt": "Hi", "checks": []}"#,
            "`checks` is empty",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "checks": [{"type": "sparkle"}]}"#,
            "unknown check type `sparkle`",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "checks": [{"text": "x"}]}"#,
            "check 1: no `type`",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "checks": ["contains"]}"#,
            "expected an object",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "checks": [{"type": "no_commas"}, {"type": "contains"}]}"#,
            "check 2: `contains`: missing field `text`",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "checks": [{"type": "contains", "txt": "x"}]}"#,
            "unknown field `txt`",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "checks": [{"type": "contains", "text": ""}]}"#,
            "`text` is empty",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "checks": [{"type": "regex", "pattern": "(unclosed"}]}"#,
            "does not compile",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "checks": [{"type": "word_count", "min": 5, "max": 2}]}"#,
            "`min` 5 is above `max` 2",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "checks": [{"type": "word_count"}]}"#,
            "give `min`, `max` or both",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "checks": [{"type": "word_count", "min": -1}]}"#,
            "`word_count`",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "checks": [{"type": "json_schema", "schema": {"type": "nonsense"}}]}"#,
            "the schema is not valid",
        ),
        (
            r#"{"id": "b", "checks": [{"type": "no_commas"}]}"#,
            "no `prompt` or `messages`",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}], "checks": [{"type": "no_commas"}]}"#,
            "not both",
        ),
        (
            r#"{"id": "b", "prompt": "  ", "checks": [{"type": "no_commas"}]}"#,
            "the prompt is empty",
        ),
        (
            r#"{"id": "b", "messages": [], "checks": [{"type": "no_commas"}]}"#,
            "`messages` is empty",
        ),
        (
            r#"{"id": "b", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], "checks": [{"type": "no_commas"}]}"#,
            "the last message must be a user turn",
        ),
        (
            r#"{"id": "b", "messages": [{"role": "wizard", "content": "Hi"}], "checks": [{"type": "no_commas"}]}"#,
            "unknown role `wizard`",
        ),
        (
            r#"{"id": "b", "system": "S", "messages": [{"role": "system", "content": "T"}, {"role": "user", "content": "Hi"}], "checks": [{"type": "no_commas"}]}"#,
            "both given",
        ),
        (
            r#"{"id": "", "prompt": "Hi", "checks": [{"type": "no_commas"}]}"#,
            "`id` must be",
        ),
        (
            r#"{"id": 1.5, "prompt": "Hi", "checks": [{"type": "no_commas"}]}"#,
            "`id` must be",
        ),
        (
            r#"{"prompt": "Hi", "checks": [{"type": "no_commas"}]}"#,
            "missing field `id`",
        ),
        (
            r#"{"id": "b", "prompt": "Hi", "chekcs": [], "checks": [{"type": "no_commas"}]}"#,
            "unknown field `chekcs`",
        ),
        (OK_LINE, "the id `a` is also on line 1"),
    ];
    for (line, want) in cases {
        // The bad line is the third: a good line, a blank one, then it.
        let text = format!("{OK_LINE}\n\n{line}\n");
        let e = parse_err(&text);
        assert!(e.starts_with("s.jsonl:3: "), "{line}: {e}");
        assert!(e.contains(want), "{line}: expected {want:?} in {e:?}");
    }
    let e = parse_err("\n  \n");
    assert!(e.contains("s.jsonl") && e.contains("no prompts"), "{e}");
    let e = Suite::load("/nonexistent/suite.jsonl").unwrap_err();
    assert!(matches!(e, SuiteError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/suite.jsonl"), "{e}");
}

#[test]
fn a_suite_file_reads_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.jsonl");
    std::fs::write(
        &path,
        "\u{feff}{\"id\": 7, \"system\": \"Be brief.\", \"messages\": [{\"role\": \"user\", \"content\": \"A\"}, {\"role\": \"assistant\", \"content\": \"B\"}, {\"role\": \"user\", \"content\": \"C\"}], \"checks\": [{\"type\": \"lowercase\"}], \"meta\": {\"source\": \"me\"}}\n",
    )
    .unwrap();
    let s = Suite::load(path.to_str().unwrap()).unwrap();
    assert_eq!(s.name, path.display().to_string());
    assert_eq!(s.items.len(), 1);
    let it = &s.items[0];
    assert_eq!(it.id, "7");
    assert!(matches!(it.input, SuiteInput::Messages(ref m) if m.len() == 3));
    assert_eq!(
        it.turns(),
        [
            ("system", "Be brief."),
            ("user", "A"),
            ("assistant", "B"),
            ("user", "C")
        ]
    );
    std::fs::write(&path, format!("{OK_LINE}\n{{\"id\": \"z\", \"prompt\": \"Hi\", \"checks\": [{{\"type\": \"glitter\"}}]}}\n")).unwrap();
    let e = Suite::load(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:2: ", path.display())), "{e}");
    assert!(e.contains("`glitter`"), "{e}");
}

#[test]
fn the_builtin_suite_uses_every_check_type() {
    let s = Suite::load("builtin").unwrap();
    assert_eq!(s.name, "builtin");
    assert!((15..=30).contains(&s.items.len()), "{}", s.items.len());
    for kind in CHECK_TYPES {
        assert!(
            s.items
                .iter()
                .any(|it| it.checks.iter().any(|c| c.kind() == *kind)),
            "no `{kind}` check in the built-in suite"
        );
    }
    assert!(s.items.iter().any(|it| it.system.is_some()));
    assert!(s
        .items
        .iter()
        .any(|it| matches!(it.input, SuiteInput::Messages(_))));
}

/// Checks whose outcome does not depend on what a random model writes.
const TINY_SUITE: &str = r#"{"id": "p1", "prompt": "Say something.", "checks": [{"type": "not_contains", "text": "§§impossible§§"}, {"type": "contains", "text": "§§impossible§§"}, {"type": "regex", "pattern": "^[\\s\\S]*$"}]}
{"id": "p2", "system": "You are terse.", "prompt": "Hello", "checks": [{"type": "word_count", "max": 100000}, {"type": "exact", "text": "§§impossible§§"}]}
{"id": "p3", "messages": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"}, {"role": "user", "content": "C"}], "checks": [{"type": "word_count", "min": 100000}, {"type": "not_contains", "text": "§§impossible§§"}]}
"#;

/// (id, check index) → the outcome every reply of at most a few tokens gets.
const FIXED: &[(&str, usize, bool)] = &[
    ("p1", 0, true),
    ("p1", 1, false),
    ("p1", 2, true),
    ("p2", 0, true),
    ("p2", 1, false),
    ("p3", 0, false),
    ("p3", 1, true),
];

fn tiny_model() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    finetune_studio::model::Model,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_model(dir.path(), Architecture::Llama, 7).unwrap();
    let model = finetune_studio::model::load_hf_folder(&path, &candle_core::Device::Cpu).unwrap();
    (dir, path, model)
}

fn assert_structure(report: &eval::SuiteReport, suite: &Suite, max_new: usize) {
    assert_eq!(report.prompts.len(), suite.items.len());
    for (p, it) in report.prompts.iter().zip(&suite.items) {
        assert_eq!(p.id, it.id);
        assert_eq!(p.checks.len(), it.checks.len());
        for (c, want) in p.checks.iter().zip(&it.checks) {
            assert_eq!(&c.check, want);
            assert!(!c.reason.is_empty());
        }
        assert_eq!(p.passed, p.checks.iter().all(|c| c.passed));
        assert!(p.generated_tokens <= max_new);
        if p.stop_reason == StopReason::MaxTokens {
            assert_eq!(p.generated_tokens, max_new);
        }
    }
    for (id, k, want) in FIXED {
        let p = report.prompts.iter().find(|p| p.id == *id).unwrap();
        assert_eq!(
            p.checks[*k].passed, *want,
            "{id} check {k}: {}",
            p.checks[*k].reason
        );
    }
    // Rates add up.
    let all: Vec<_> = report.prompts.iter().flat_map(|p| &p.checks).collect();
    assert_eq!(report.checks.total, all.len());
    assert_eq!(
        report.checks.passed,
        all.iter().filter(|c| c.passed).count()
    );
    assert_eq!(report.prompts_passed.total, suite.items.len());
    // Every prompt has an impossible check that fails.
    assert_eq!(report.prompts_passed.passed, 0);
    let kinds: Vec<&str> = report.by_check.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["contains", "not_contains", "regex", "exact", "word_count"]
    );
    assert_eq!(
        report.by_check.iter().map(|c| c.rate.total).sum::<usize>(),
        all.len()
    );
    let contains = &report.by_check[0].rate;
    assert_eq!(
        (contains.passed, contains.total, contains.rate),
        (0, 1, 0.0)
    );
    let not_contains = &report.by_check[1].rate;
    assert_eq!(
        (not_contains.passed, not_contains.total, not_contains.rate),
        (2, 2, 1.0)
    );
    let words = &report.by_check[4].rate;
    assert_eq!((words.passed, words.total), (1, 2));
}

#[test]
fn a_suite_runs_end_to_end_on_a_tiny_model() {
    let (_d, _path, model) = tiny_model();
    let suite = Suite::parse(TINY_SUITE, "tiny.jsonl").unwrap();
    let opts = RunOptions {
        max_new_tokens: 6,
        ..RunOptions::default()
    };
    assert_eq!(opts.sampling.temperature, 0.0, "greedy by default");
    let cancel = AtomicBool::new(false);
    let mut seen: Vec<(usize, String)> = Vec::new();
    let report = eval::run_suite(
        &model,
        None,
        None,
        &suite,
        &opts,
        &cancel,
        &mut |i, r: &PromptResult| seen.push((i, r.id.clone())),
    )
    .unwrap();
    assert_eq!(seen, [(0, "p1".into()), (1, "p2".into()), (2, "p3".into())]);
    assert_eq!(report.suite, "tiny.jsonl");
    assert_eq!(report.model, model.name);
    assert_eq!(report.adapter, None);
    assert_eq!(report.max_new_tokens, 6);
    assert_structure(&report, &suite, 6);
    assert!(
        report.prompts.iter().any(|p| p.generated_tokens > 0),
        "the model generated nothing"
    );

    // Greedy: the same replies again.
    let again =
        eval::run_suite(&model, None, None, &suite, &opts, &cancel, &mut |_, _| {}).unwrap();
    assert_eq!(again, report);

    // The report round-trips through JSON, with the fields a script reads.
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "suite",
        "model",
        "checks",
        "prompts_passed",
        "by_check",
        "prompts",
    ] {
        assert!(json.get(key).is_some(), "no `{key}` in {json}");
    }
    assert_eq!(json["by_check"][0]["type"], "contains");
    assert_eq!(json["prompts"][0]["checks"][1]["check"]["type"], "contains");
    assert!(json["prompts"][0]["reply"].is_string());
    let back: eval::SuiteReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn a_suite_runs_with_an_adapter_and_stops_when_cancelled() {
    let (dir, _path, model) = tiny_model();
    let adapter_dir = dir.path().join("adapter");
    write_tiny_adapter(&adapter_dir, Architecture::Llama, 3).unwrap();
    let lora = finetune_studio::adapter::read_adapter(
        &adapter_dir,
        model.config(),
        model.transformer.device(),
    )
    .unwrap()
    .lora;
    let suite = Suite::parse(TINY_SUITE, "tiny.jsonl").unwrap();
    let opts = RunOptions {
        max_new_tokens: 5,
        ..RunOptions::default()
    };
    let cancel = AtomicBool::new(false);
    let report = eval::run_suite(
        &model,
        Some(&lora),
        Some("adapter".into()),
        &suite,
        &opts,
        &cancel,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(report.adapter.as_deref(), Some("adapter"));
    assert_structure(&report, &suite, 5);

    let cancel = AtomicBool::new(true);
    let e = eval::run_suite(&model, None, None, &suite, &opts, &cancel, &mut |_, _| {
        panic!("no prompt runs after a cancel")
    })
    .unwrap_err();
    assert!(matches!(e, RunError::Cancelled));
}

#[test]
fn eval_suite_from_the_command_line() {
    use clap::Parser;
    use finetune_studio::cli::{self, Cli};
    let (dir, path, _model) = tiny_model();
    let suite = dir.path().join("tiny.jsonl");
    std::fs::write(&suite, TINY_SUITE).unwrap();
    let parse = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("finetune-studio").chain(args.iter().copied()))
    };
    let (m, s) = (path.to_str().unwrap(), suite.to_str().unwrap());
    for extra in [&["--json"][..], &[]] {
        let mut args = vec!["eval", "--model", m, "--suite", s, "--max-new-tokens", "3"];
        args.extend_from_slice(extra);
        let cli = parse(&args).unwrap();
        let cmd = cli.command.expect("a subcommand");
        assert_eq!(cli::run(cmd).unwrap(), 0);
    }
    // --suite and --data exclude each other; one of them is needed.
    let e = parse(&["eval", "--model", m, "--suite", s, "--data", "x.jsonl"])
        .err()
        .unwrap();
    assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    let e = parse(&["eval", "--model", m]).err().unwrap();
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    // A malformed suite fails before any model is loaded, naming the file and line.
    std::fs::write(
        &suite,
        "{\"id\": 1, \"prompt\": \"x\", \"checks\": [{\"type\": \"nope\"}]}\n",
    )
    .unwrap();
    let cmd = parse(&["eval", "--model", "/nonexistent-model", "--suite", s])
        .unwrap()
        .command
        .unwrap();
    let e = format!("{:#}", cli::run(cmd).unwrap_err());
    assert!(
        e.contains(&format!("{s}:1:")) && e.contains("`nope`"),
        "{e}"
    );
}
