//! GUI tests of the Chat tab's blind A/B view on a tiny random model, the base against
//! the base plus a random adapter: the names are hidden until revealed, a rating writes a
//! preference record the preference reader reads back, undo takes it out of the file and
//! the tally, an edited reply after "both bad" is chosen over both, and the tally line
//! shows the win rate with its Wilson interval.

mod app_common;
mod chat_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use app_common::{step_until, studio_home};
use chat_common::{chat_harness, type_message, write_random_adapter};
use eframe::egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use finetune_studio::app::{Level, StudioApp};
use finetune_studio::data::tally::Tally;
use finetune_studio::data::PreferenceSet;

/// The Chat tab in a blind session: model 1 the base, model 2 the base plus a random
/// adapter in `<home>/<name>-adapter`; judgments go to `<home>/<name>/ab.jsonl`.
fn blind_harness(name: &str) -> (Harness<'static, StudioApp>, PathBuf) {
    let adapter = studio_home().join(format!("{name}-adapter"));
    write_random_adapter(&adapter);
    let mut h = chat_harness();
    h.state_mut().chat.max_new_tokens = 16;
    h.get_by_label("2 panes").click();
    h.run_steps(2);
    {
        let pane = &mut h.state_mut().chat.panes[1];
        pane.use_adapter = true;
        pane.adapter_dir = adapter.display().to_string();
    }
    h.get_by_label("Blind A/B").click();
    h.run_steps(2);
    h.get_by_label("Start blind session").click();
    h.run_steps(2);
    let path = studio_home().join(name).join("ab.jsonl");
    h.state_mut().chat.blind.path = path.display().to_string();
    assert!(h.state().chat.blind.is_started());
    (h, path)
}

fn ask(h: &mut Harness<'static, StudioApp>, prompt: &str) {
    type_message(h, prompt);
    h.get_by_label("Send").click();
    assert!(
        step_until(h, Duration::from_secs(60), |app| app
            .chat
            .blind
            .awaiting_verdict()),
        "no replies: {:?} {:?}",
        h.state().notices.items(),
        h.state()
            .chat
            .blind
            .panes
            .iter()
            .map(|p| &p.error)
            .collect::<Vec<_>>()
    );
    h.run_steps(2);
}

/// Waits until the file changes are written.
fn settle(h: &mut Harness<'static, StudioApp>) {
    assert!(
        step_until(h, Duration::from_secs(20), |app| !app
            .chat
            .blind
            .is_writing()),
        "the write did not finish"
    );
    h.run_steps(1);
    let errors: Vec<_> = h
        .state()
        .notices
        .items()
        .iter()
        .filter(|n| n.level == Level::Error)
        .map(|n| format!("{}: {}", n.title, n.details))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

fn pairs_in(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).expect("read the preference file");
    if text.trim().is_empty() {
        return 0;
    }
    PreferenceSet::load(path).expect("load").len()
}

#[test]
fn a_rating_is_kept_blind_undone_and_revealed() {
    let (mut h, path) = blind_harness("blind-rate");
    let adapter_name = "Base + blind-rate-adapter";
    // The names stay hidden: neither the sides nor the tally say which model is which.
    assert!(h.query_by_label_contains("blind-rate-adapter").is_none());
    assert!(h.query_by_label_contains("Base model").is_none());
    assert!(h
        .query_by_label("Model 1 against Model 2: no decisive judgment yet · 0 ties · 0 both bad")
        .is_some());

    ask(&mut h, "Who are you?");
    assert!(h.query_by_label_contains("blind-rate-adapter").is_none());
    let blind = &h.state().chat.blind;
    let (a, b) = (blind.reply_on(0), blind.reply_on(1));
    let a_model = blind.model_on(0);
    let a_name = blind.model_name(a_model);
    let b_name = blind.model_name(1 - a_model);
    eprintln!("A: {a:?}\nB: {b:?}");
    assert!(!a.trim().is_empty() && !b.trim().is_empty());
    assert_ne!(a, b, "the adapter changes the reply");
    assert!(h.query_by_label(&a).is_some(), "A's reply {a:?} not shown");
    assert!(h.query_by_label(&b).is_some(), "B's reply {b:?} not shown");
    // No speed line: the adapter's side is slower, which would tell the sides apart.
    assert!(h.query_by_label_contains("tok/s").is_none());

    h.get_by_label("A is better").click();
    h.run_steps(2);
    let draft = h.state().chat.blind.draft.clone().expect("a draft");
    assert_eq!(draft.text, a, "the chosen reply starts as A's");
    h.get_by_label("Keep").click();
    h.run_steps(1);
    settle(&mut h);

    // The record reads back through the preference reader, with who wrote which reply.
    let set = PreferenceSet::load(&path).expect("load the preference file");
    assert_eq!(set.len(), 1);
    assert!(set.problems().is_empty(), "{:?}", set.problems());
    let p = &set.pairs[0];
    assert_eq!(p.prompt.len(), 1);
    assert_eq!(p.prompt[0].content, "Who are you?");
    assert_eq!(p.chosen[0].content, a);
    assert_eq!(p.rejected[0].content, b);
    assert_eq!(p.meta["models"]["chosen"], a_name.as_str());
    assert_eq!(p.meta["models"]["rejected"], b_name.as_str());
    let seed = h.state().chat.sampling.seed;
    assert_eq!(p.meta["seed"], seed);
    assert_eq!(p.meta["sampling"]["max_new_tokens"], 16);
    assert_eq!(p.meta["judgment"]["verdict"], "a");
    assert_eq!(
        p.meta["judgment"]["order_seed"],
        h.state().chat.blind.order_seed
    );
    let tally = h.state().chat.blind.tally;
    assert_eq!(tally.wins[a_model], 1);
    assert_eq!(tally.total(), 1);
    let wins_of_1 = if a_model == 0 { 1 } else { 0 };
    assert!(
        h.query_by_label_contains(&format!("Model 1 wins {wins_of_1} of 1"))
            .is_some(),
        "{}",
        h.state().chat.blind.tally_line()
    );
    // The conversation goes on from the chosen reply on both sides.
    for pane in &h.state().chat.blind.panes {
        assert_eq!(pane.last_reply().map(|t| t.content.as_str()), Some(&*a));
    }

    // Undo takes the record out of the file it went to (even with another path typed
    // since) and out of the tally, and asks again.
    let other = studio_home().join("blind-rate").join("other.jsonl");
    h.state_mut().chat.blind.path = other.display().to_string();
    h.get_by_label("Undo last judgment").click();
    h.run_steps(1);
    settle(&mut h);
    assert_eq!(pairs_in(&path), 0);
    assert!(!other.exists());
    assert_eq!(h.state().chat.blind.tally, Tally::default());
    assert!(h.state().chat.blind.awaiting_verdict());
    assert_eq!(h.state().chat.blind.reply_on(1), b);
    assert!(h.query_by_label("A is better").is_some());

    // Reveal shows which model is which, on the sides and in the tally.
    h.get_by_label("Reveal names").click();
    h.run_steps(2);
    // Its side's heading and the tally line.
    assert_eq!(h.query_all_by_label_contains(adapter_name).count(), 2);
    let side = if a_model == 1 { "A" } else { "B" };
    assert!(h
        .query_by_label(&format!("{side} · Model 2 · {adapter_name}"))
        .is_some());
    assert!(h
        .query_by_label_contains("Model 1 (Base model) against Model 2 (Base + blind-rate-adapter)")
        .is_some());
    h.get_by_label("Hide names").click();
    h.run_steps(2);
    assert!(h.query_by_label_contains("blind-rate-adapter").is_none());
}

#[test]
fn an_edit_after_both_bad_is_chosen_over_both_and_ties_only_count() {
    let (mut h, path) = blind_harness("blind-edit");
    ask(&mut h, "Say hello.");
    let (a, b) = {
        let blind = &h.state().chat.blind;
        (blind.reply_on(0), blind.reply_on(1))
    };
    h.get_by_label("Both bad").click();
    h.run_steps(2);
    assert_eq!(
        h.state().chat.blind.draft.as_ref().map(|d| d.text.as_str()),
        Some("")
    );
    let editor = h.get_by_role_and_label(Role::MultilineTextInput, "Chosen reply");
    editor.focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::MultilineTextInput, "Chosen reply")
        .type_text("Hello!");
    h.run_steps(1);
    h.get_by_label("Keep").click();
    h.run_steps(1);
    settle(&mut h);
    let set = PreferenceSet::load(&path).expect("load");
    assert_eq!(set.len(), 2);
    assert!(set.pairs.iter().all(|p| p.chosen[0].content == "Hello!"));
    assert_eq!(set.pairs[0].rejected[0].content, a);
    assert_eq!(set.pairs[1].rejected[0].content, b);
    assert!(set
        .pairs
        .iter()
        .all(|p| p.meta["models"]["chosen"] == "edited by hand"));

    // The next prompt continues from the written reply; a tie is counted, not written.
    ask(&mut h, "Again?");
    h.get_by_label("Tie").click();
    h.run_steps(2);
    h.get_by_label("Keep").click();
    h.run_steps(1);
    settle(&mut h);
    assert_eq!(pairs_in(&path), 2);
    let t = h.state().chat.blind.tally;
    assert_eq!((t.wins, t.ties, t.both_bad), ([0, 0], 1, 1));
    let prompt_index = h.state().chat.blind.prompt_index;
    assert_eq!(prompt_index, 2);

    // Undo of the tie changes the tally only.
    h.get_by_label("Undo last judgment").click();
    h.run_steps(1);
    settle(&mut h);
    assert_eq!(h.state().chat.blind.tally.ties, 0);
    assert_eq!(pairs_in(&path), 2);

    // The tally line: a win rate with its Wilson 95 % interval.
    h.state_mut().chat.blind.tally = Tally {
        wins: [7, 3],
        ties: 2,
        both_bad: 1,
    };
    h.run_steps(2);
    let line = "Model 1 wins 7 of 10 (70 %, 95 % CI 40–89 %) against Model 2 · 2 ties · 1 both bad";
    assert!(
        h.query_by_label(line).is_some(),
        "{}",
        h.state().chat.blind.tally_line()
    );
}
