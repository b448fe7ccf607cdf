//! Pairwise judgment with a real (tiny, random) judge model: the answer probabilities are
//! a distribution, the same question gets the same answer, identical replies can only tie
//! whatever position the judge favours (the order swap at work), every verdict is the
//! combination of its two orders; and `finetune-studio judge` from the command line writes
//! a result that reads back, with the judge prompt it used.

use std::sync::atomic::AtomicBool;

use finetune_studio::eval::judge::{
    judge_pairs, JudgeLabels, JudgePair, JudgePrompt, JudgeResult, JudgeScorer, ModelJudge,
    Verdict, DEFAULT_JUDGE_PROMPT,
};
use finetune_studio::model::{load_hf_folder, Architecture};
use finetune_studio::testkit::{write_tiny_adapter, write_tiny_model};

fn labels() -> JudgeLabels {
    JudgeLabels {
        a: "a".into(),
        b: "b".into(),
        judge: "tiny".into(),
    }
}

#[test]
fn a_tiny_model_judges_both_orders() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_tiny_model(dir.path(), Architecture::Llama, 5).expect("tiny model");
    let model = load_hf_folder(&path, &candle_core::Device::Cpu).expect("load");
    let judge = ModelJudge::new(&model, None).expect("the tiny vocabulary tells A, B, tie apart");
    let template = JudgePrompt::default_prompt().expect("default prompt");

    let q = template
        .render("Name a colour.", "Blue.", "Seven.")
        .expect("render");
    let p = judge.preference(&q).expect("preference");
    assert!((p.first + p.second + p.tie - 1.0).abs() < 1e-9, "{p:?}");
    assert!(p.answer_mass > 0.0 && p.answer_mass <= 1.0, "{p:?}");
    assert_eq!(judge.preference(&q).expect("again"), p, "deterministic");

    let pairs = vec![
        JudgePair {
            prompt: "Name a colour.".into(),
            reply_a: "Blue.".into(),
            reply_b: "Seven.".into(),
        },
        // The same reply on both sides: each order puts the same question, so the judge
        // picks the same position twice, which is a tie, never a win.
        JudgePair {
            prompt: "Say hello.".into(),
            reply_a: "Hello!".into(),
            reply_b: "Hello!".into(),
        },
        JudgePair {
            prompt: "What is 2 + 2?".into(),
            reply_a: "5".into(),
            reply_b: "4".into(),
        },
    ];
    let cancel = AtomicBool::new(false);
    let mut seen = 0;
    let r = judge_pairs(&judge, &template, labels(), &pairs, &cancel, &mut |i, _| {
        assert_eq!(i, seen);
        seen += 1;
    })
    .expect("judged");
    assert_eq!(seen, 3);
    assert_eq!(r.pairs.len(), 3);
    assert_eq!(r.wins + r.losses + r.ties, 3);
    assert_eq!(r.pairs[1].verdict, Verdict::Tie);
    assert_eq!(r.pairs[1].a_first, r.pairs[1].b_first);
    for v in &r.pairs {
        assert_eq!(
            v.verdict,
            Verdict::combine(v.a_first.choice(), v.b_first.choice())
        );
    }
    // With A's reply first, the question is the one asked above.
    assert_eq!(r.pairs[0].a_first, p);
    let expected = (r.wins as f64 + r.ties as f64 / 2.0) / 3.0;
    assert!((r.win_rate - expected).abs() < 1e-12);
    assert!(r.interval.low <= r.win_rate && r.win_rate <= r.interval.high);
}

#[test]
fn judge_from_the_command_line_writes_its_result() {
    use clap::Parser;
    use finetune_studio::cli::{self, Cli};
    let dir = tempfile::tempdir().expect("temp dir");
    let model = write_tiny_model(&dir.path().join("m"), Architecture::Llama, 5).expect("tiny");
    let adapter = dir.path().join("adapter");
    write_tiny_adapter(&adapter, Architecture::Llama, 17).expect("adapter");
    let prompts = dir.path().join("prompts.txt");
    std::fs::write(&prompts, "Who are you?\n\nName a colour.\nSay hi.\n").expect("prompts");
    let template = dir.path().join("judge.jinja");
    let custom = format!("Be strict.\n{DEFAULT_JUDGE_PROMPT}");
    std::fs::write(&template, &custom).expect("template");
    let out = dir.path().join("out").join("result.json");
    let (m, a, p, t, o) = (
        model.to_str().expect("utf-8"),
        adapter.to_str().expect("utf-8"),
        prompts.to_str().expect("utf-8"),
        template.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
    );
    let parse = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("finetune-studio").chain(args.iter().copied()))
    };
    let cli = parse(&[
        "judge",
        "--prompts",
        p,
        "--a",
        m,
        "--b",
        m,
        "--b-adapter",
        a,
        "--judge",
        m,
        "--judge-prompt",
        t,
        "--out",
        o,
        "--max-new-tokens",
        "4",
    ])
    .expect("parse");
    assert_eq!(
        cli::run(cli.command.expect("a subcommand")).expect("judge"),
        0
    );
    let text = std::fs::read_to_string(&out).expect("the result file");
    let r: JudgeResult = serde_json::from_str(&text).expect("a result");
    assert_eq!(r.pairs.len(), 3);
    assert_eq!(r.pairs[0].pair.prompt, "Who are you?");
    assert_eq!(r.pairs[2].pair.prompt, "Say hi.");
    assert_eq!(r.judge_prompt, custom);
    assert_eq!(r.labels.a, m);
    assert!(r.labels.b.ends_with("adapter"), "{}", r.labels.b);
    assert_eq!(r.wins + r.losses + r.ties, 3);
    assert!(r.pairs.iter().all(|v| !v.pair.reply_a.is_empty()));
    assert_ne!(
        r.pairs.iter().map(|v| &v.pair.reply_a).collect::<Vec<_>>(),
        r.pairs.iter().map(|v| &v.pair.reply_b).collect::<Vec<_>>(),
        "the adapter changes B's replies"
    );

    // A broken template is refused before any model loads, naming the file.
    std::fs::write(&template, "{{ prompt ").expect("template");
    let cli = parse(&[
        "judge",
        "--prompts",
        p,
        "--a",
        "/nonexistent-model",
        "--judge",
        "/nonexistent-model",
        "--judge-prompt",
        t,
    ])
    .expect("parse");
    let e = format!(
        "{:#}",
        cli::run(cli.command.expect("a subcommand")).unwrap_err()
    );
    assert!(e.contains("judge.jinja"), "{e}");
    // --judge is required.
    let e = parse(&["judge", "--prompts", p]).expect_err("--judge is missing");
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
}
