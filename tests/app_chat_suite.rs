//! GUI tests of an eval suite run through batch compare's panes: the built-in suite through
//! two panes of a tiny random model (the base, and the base plus an adapter) gives each a
//! report, with its pass rates shown and a failing reply opened by a click; a synthetic
//! comparison shows its rates per pane, per check type and per prompt, and a click on the
//! one failing cell shows that reply and the check it failed; a running suite stops; a
//! suite file that does not exist is reported by name. With two panes, "Judge A vs B"
//! puts a batch's pairs of replies to the loaded model as judge, with an edited prompt,
//! shows the win rate and each verdict, and saves the result beside the batch export.

mod app_common;
mod chat_common;

use std::time::Duration;

use app_common::{step_until, studio_home};
use chat_common::{chat_harness, notices, two_pane_harness};
use eframe::egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use finetune_studio::app::{
    judge_result_path, rate_text, BatchShown, ChatView, StudioApp, SuiteComparison,
};
use finetune_studio::eval::judge::{JudgeResult, DEFAULT_JUDGE_PROMPT};
use finetune_studio::eval::report::RunInfo;
use finetune_studio::eval::{Check, PromptResult, SuiteReport};
use finetune_studio::infer::{Sampling, StopReason};
use finetune_studio::worker::suite_job::SuitePrompt;

/// [`two_pane_harness`] on the batch compare view.
fn batch_harness(name: &str) -> Harness<'static, StudioApp> {
    let mut h = two_pane_harness(name);
    h.get_by_label("Batch compare").click();
    h.run_steps(2);
    h
}

/// The cell of the suite results that is open, if any.
fn selected_cell(h: &Harness<'static, StudioApp>) -> Option<(usize, usize)> {
    h.state()
        .chat
        .batch
        .suite
        .results
        .as_ref()
        .and_then(|r| r.selected)
}

fn suite_running(app: &StudioApp) -> bool {
    app.chat.batch.suite.is_running()
}

#[test]
fn the_builtin_suite_runs_through_two_panes_and_a_failing_reply_opens() {
    let mut h = batch_harness("suite-adapter");
    h.state_mut().chat.max_new_tokens = 8;
    h.get_by_label("▶ Run suite").click();
    h.run_steps(1);
    assert!(suite_running(h.state()), "{}", notices(&h));
    assert!(
        step_until(&mut h, Duration::from_secs(300), |app| !suite_running(app)),
        "{}",
        notices(&h)
    );
    let results = h.state().chat.batch.suite.results.clone().expect("results");
    assert_eq!(h.state().chat.batch.shown, BatchShown::Suite);
    assert_eq!(results.suite, "builtin");
    assert_eq!(results.prompts.len(), 25);
    assert_eq!(results.progress(), (50, 50));
    let reports: Vec<&SuiteReport> = results
        .panes
        .iter()
        .map(|p| p.report.as_ref().expect("a report per pane"))
        .collect();
    assert_eq!(reports[0].adapter, None);
    assert!(reports[1]
        .adapter
        .as_deref()
        .is_some_and(|a| a.ends_with("suite-adapter")));
    for r in &reports {
        assert_eq!(r.prompts.len(), 25);
        assert_eq!(r.sampling, Sampling::greedy(), "greedy by default");
    }
    assert_ne!(
        reports[0].prompts[0].reply, reports[1].prompts[0].reply,
        "the adapter changes the reply"
    );

    h.run_steps(2);
    assert!(h.query_by_label("50 of 50 suite replies").is_some());
    for r in &reports {
        assert!(
            h.query_by_label(&rate_text(&r.checks)).is_some(),
            "checks rate {} not shown",
            rate_text(&r.checks)
        );
        assert!(h.query_by_label(&rate_text(&r.prompts_passed)).is_some());
    }

    // The first failing cell in the grid's order (prompt by prompt, pane by pane).
    let (i, j) = (0..25)
        .flat_map(|i| (0..2).map(move |j| (i, j)))
        .find(|&(i, j)| !reports[j].prompts[i].passed)
        .expect("a random model fails some check");
    let failing = &reports[j].prompts[i];
    let n_failed = failing.checks.iter().filter(|c| !c.passed).count();
    let label = format!("{n_failed} of {} failed", failing.checks.len());
    // The grid sits below the rate tables: scroll it into view, then click.
    h.query_all_by_label(&label)
        .next()
        .expect("a failing cell")
        .scroll_to_me();
    h.run_steps(3);
    h.query_all_by_label(&label)
        .next()
        .expect("a failing cell")
        .click();
    h.run_steps(2);
    let selected = selected_cell(&h);
    assert_eq!(selected, Some((i, j)));
    let head = format!("{} · {}", results.panes[j].label, failing.id);
    assert!(h.query_by_label(&head).is_some(), "{head} not shown");
    for c in failing.checks.iter().filter(|c| !c.passed) {
        let line = format!("failed {}: {}", c.check.kind(), c.reason);
        assert!(h.query_by_label(&line).is_some(), "{line} not shown");
    }
    if !failing.reply.trim().is_empty() {
        assert!(
            h.query_all_by_label(&failing.reply).next().is_some(),
            "the reply is not shown"
        );
    }
}

fn contains(text: &str) -> Check {
    serde_json::from_value(serde_json::json!({"type": "contains", "text": text})).expect("check")
}

fn word_count_max(n: usize) -> Check {
    serde_json::from_value(serde_json::json!({"type": "word_count", "max": n})).expect("check")
}

/// A report of two prompts: `capital` with a `contains` and a word count, `sky` with a
/// `contains`.
fn report(adapter: Option<&str>, capital: &str, sky: &str) -> SuiteReport {
    let prompts = vec![
        PromptResult::judge(
            "capital",
            capital.into(),
            StopReason::StopToken,
            5,
            &[contains("Paris"), word_count_max(6)],
        ),
        PromptResult::judge(
            "sky",
            sky.into(),
            StopReason::StopToken,
            2,
            &[contains("blue")],
        ),
    ];
    SuiteReport::new(
        RunInfo {
            suite: "builtin".into(),
            model: "tiny".into(),
            adapter: adapter.map(String::from),
            max_new_tokens: 16,
            sampling: Sampling::greedy(),
        },
        prompts,
    )
}

#[test]
fn a_comparison_shows_its_rates_and_the_failing_reply_on_a_click() {
    let mut h = chat_harness();
    h.state_mut().chat.view = ChatView::Batch;
    let mut c = SuiteComparison::new("builtin".into(), vec!["Base model".into(), "Tuned".into()]);
    c.prompts = vec![
        SuitePrompt {
            id: "capital".into(),
            text: "What is the capital of France?".into(),
        },
        SuitePrompt {
            id: "sky".into(),
            text: "What colour is the sky?".into(),
        },
    ];
    c.panes[0].report = Some(report(None, "Paris.", "blue"));
    c.panes[0].done = 2;
    c.panes[1].report = Some(report(Some("tuned"), "Lyon is the capital city.", "blue"));
    c.panes[1].done = 2;
    h.state_mut().chat.batch.suite.results = Some(c);
    h.state_mut().chat.batch.shown = BatchShown::Suite;
    h.run_steps(3);

    // Per pane: checks 3/3 and 2/3, prompts 2/2 and 1/2.
    assert!(h.query_by_label("3/3 · 100.0 %").is_some());
    assert!(h.query_by_label("2/3 · 66.7 %").is_some());
    // Prompts 2/2 and 1/2; contains too (for the base and the tuned pane).
    assert_eq!(h.query_all_by_label("2/2 · 100.0 %").count(), 2);
    assert_eq!(h.query_all_by_label("1/2 · 50.0 %").count(), 2);
    // Per check type: word_count 1/1 for both.
    assert!(h.query_by_label("contains").is_some());
    assert!(h.query_by_label("word_count").is_some());
    assert_eq!(h.query_all_by_label("1/1 · 100.0 %").count(), 2);
    // Per prompt: three passing cells, one failing.
    assert_eq!(h.query_all_by_label("pass").count(), 3);
    assert!(h.query_by_label("No reply chosen.").is_some());
    assert!(h.query_by_label("Lyon is the capital city.").is_none());

    h.get_by_label("1 of 2 failed").click();
    h.run_steps(2);
    let selected = selected_cell(&h);
    assert_eq!(selected, Some((0, 1)));
    assert!(h.query_by_label("Tuned · capital").is_some());
    assert!(h.query_by_label("Lyon is the capital city.").is_some());
    assert!(h
        .query_by_label("failed contains: \"Paris\" not found")
        .is_some());
    assert!(h.query_by_label_contains("passed word_count").is_some());
    assert!(h
        .query_by_label("Prompt: What is the capital of France?")
        .is_some());

    // Back to the batch replies and again to the suite: the choice stays.
    h.get_by_label("Batch replies").click();
    h.run_steps(2);
    assert!(h.query_by_label("Lyon is the capital city.").is_none());
    h.get_by_label("Suite results").click();
    h.run_steps(2);
    assert!(h.query_by_label("Lyon is the capital city.").is_some());
}

#[test]
fn a_running_suite_stops() {
    let mut h = batch_harness("suite-stop-adapter");
    h.state_mut().chat.max_new_tokens = 30_000;
    h.get_by_label("▶ Run suite").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |app| app
            .chat
            .batch
            .suite
            .results
            .as_ref()
            .is_some_and(|r| r.prompts.len() == 25)),
        "{}",
        notices(&h)
    );
    h.get_by_label("■ Stop suite").click();
    assert!(
        step_until(&mut h, Duration::from_secs(30), |app| !suite_running(app)),
        "{}",
        notices(&h)
    );
    let results = h.state().chat.batch.suite.results.clone().expect("results");
    let (done, total) = results.progress();
    assert_eq!(total, 50);
    assert!(done < total, "{done} of {total}: it did not stop");
    assert!(results.panes.iter().all(|p| p.report.is_none()));
    h.run_steps(2);
    assert!(h.query_by_label_contains("Suite run stopped").is_some());
    // The panes are free again.
    assert!(!h.state().chat.batch.is_busy());
}

#[test]
fn a_missing_suite_file_is_reported_by_name() {
    let mut h = batch_harness("suite-missing-adapter");
    h.get_by_label("Suite file").click();
    h.run_steps(1);
    let missing = studio_home().join("no-such-suite.jsonl");
    h.state_mut().chat.batch.suite.path = missing.display().to_string();
    h.run_steps(1);
    h.get_by_label("▶ Run suite").click();
    assert!(
        step_until(&mut h, Duration::from_secs(20), |app| !suite_running(app)
            && app
                .notices
                .items()
                .iter()
                .any(|n| n.title.contains("suite run failed"))),
        "{}",
        notices(&h)
    );
    let n = h
        .state()
        .notices
        .items()
        .iter()
        .find(|n| n.title.contains("suite run failed"))
        .cloned()
        .expect("the notice");
    assert!(
        n.details.contains("no-such-suite.jsonl"),
        "the notice names the file: {n:?}"
    );
}

#[test]
fn two_panes_are_judged_and_the_result_saved_beside_the_batch() {
    let mut h = batch_harness("judge-adapter");
    h.state_mut().chat.max_new_tokens = 6;
    let export = studio_home().join("judge-out").join("compare.jsonl");
    h.state_mut().chat.batch.export_path = export.display().to_string();
    h.get_by_role_and_label(Role::MultilineTextInput, "Prompts")
        .focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::MultilineTextInput, "Prompts")
        .type_text("Who are you?");
    h.run_steps(1);
    h.key_press(eframe::egui::Key::Enter);
    h.get_by_role_and_label(Role::MultilineTextInput, "Prompts")
        .type_text("Name a colour.");
    h.run_steps(1);
    h.get_by_label("▶ Run batch").click();
    h.run_steps(1);
    assert!(
        step_until(&mut h, Duration::from_secs(60), |app| !app
            .chat
            .batch
            .is_running()),
        "{}",
        notices(&h)
    );
    assert_eq!(
        h.state().chat.batch.table.as_ref().map(|t| t.progress()),
        Some((4, 4))
    );

    h.get_by_label("Judge A vs B").click();
    h.run_steps(2);
    assert_eq!(h.state().chat.batch.shown, BatchShown::Judge);
    assert_eq!(h.state().chat.batch.judge.prompt, DEFAULT_JUDGE_PROMPT);
    // The prompt is editable; the edited one is used and saved.
    let edited = format!("Be strict.\n{DEFAULT_JUDGE_PROMPT}");
    h.state_mut().chat.batch.judge.prompt = edited.clone();
    h.run_steps(1);
    h.get_by_label("▶ Run judge").click();
    h.run_steps(1);
    assert!(h.state().chat.batch.judge.is_running(), "{}", notices(&h));
    assert!(
        step_until(&mut h, Duration::from_secs(60), |app| !app
            .chat
            .batch
            .judge
            .is_running()),
        "{}",
        notices(&h)
    );
    let judge = &h.state().chat.batch.judge;
    let result = judge.result.clone().expect("a result");
    assert_eq!(result.pairs.len(), 2);
    assert_eq!(result.wins + result.losses + result.ties, 2);
    assert_eq!(result.judge_prompt, edited);
    let path = judge_result_path(&export.display().to_string());
    assert_eq!(
        path,
        studio_home().join("judge-out").join("compare.judge.json")
    );
    assert_eq!(judge.saved.as_deref(), Some(path.as_path()));
    let saved: JudgeResult =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the saved result"))
            .expect("a result");
    assert_eq!(saved, result);

    h.run_steps(2);
    assert!(
        h.query_by_label(&result.summary()).is_some(),
        "the win rate"
    );
    assert!(h.query_by_label("2 of 2 pairs judged").is_some());
    for v in &result.pairs {
        let a = &v.a_first;
        let line = format!("A {:.2} · B {:.2} · tie {:.2}", a.first, a.second, a.tie);
        assert!(
            h.query_all_by_label(&line).next().is_some(),
            "{line} not shown"
        );
        assert!(h.query_all_by_label(v.verdict.describe()).next().is_some());
    }
}
