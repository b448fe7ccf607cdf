//! GUI tests of the Datasets tab, driving the real app: open a file (path injected, or
//! given at start as `finetune-studio FILE` does), select a row, edit a turn in the editor, undo and redo it, search, and see statistics.

mod app_common;

use std::time::Duration;

use app_common::{fixture, harness, harness_with, open_dataset, step_until, studio_home};
use eframe::egui;
use egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use finetune_studio::app::{AppOptions, Level, Tab};

#[test]
fn open_edit_undo_redo() {
    let mut h = harness();
    h.run_steps(2);
    open_dataset(&mut h, &fixture("llamafactory_identity.json"));
    let n = h.state().datasets.doc.as_ref().map(|d| d.data().len());
    assert_eq!(n, Some(91));
    h.run_steps(2);
    h.get_by_label("Row 3").click();
    h.run_steps(2);
    assert_eq!(h.state().datasets.selected, Some(2));

    let original = h.state().datasets.doc.as_ref().unwrap().data().records()[2].messages[1]
        .content
        .clone();
    let field = h.get_by_role_and_label(Role::MultilineTextInput, "Turn 2");
    field.focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::MultilineTextInput, "Turn 2")
        .type_text(" (edited)");
    h.run_steps(1);
    // Leaving the field commits the edit as one undo step.
    h.key_press(egui::Key::Escape);
    h.run_steps(2);
    let doc = h.state().datasets.doc.as_ref().unwrap();
    assert_eq!(
        doc.data().records()[2].messages[1].content,
        format!("{original} (edited)")
    );
    assert!(doc.is_dirty());

    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    h.run_steps(2);
    let doc = h.state().datasets.doc.as_ref().unwrap();
    assert_eq!(doc.data().records()[2].messages[1].content, original);
    assert!(
        !doc.is_dirty(),
        "undoing the only edit leaves the dataset clean"
    );

    h.get_by_label("↷ Redo").click();
    h.run_steps(2);
    let doc = h.state().datasets.doc.as_ref().unwrap();
    assert_eq!(
        doc.data().records()[2].messages[1].content,
        format!("{original} (edited)")
    );
}

#[test]
fn search_filters_rows_and_statistics_arrive() {
    let mut h = harness();
    h.run_steps(2);
    open_dataset(&mut h, &fixture("llamafactory_identity.json"));
    assert!(
        step_until(&mut h, Duration::from_secs(20), |app| app
            .datasets
            .doc
            .as_ref()
            .is_some_and(|d| d.current_analysis().is_some())),
        "statistics never arrived"
    );
    h.run_steps(2);
    assert!(h.query_by_label_contains("Validation problems").is_some());

    h.state_mut().datasets.filter.text = "Hello".into();
    assert!(step_until(&mut h, Duration::from_secs(10), |app| {
        app.datasets.filter.match_count().is_some()
    }));
    let matches = h.state().datasets.filter.match_count().unwrap();
    assert!(matches > 0 && matches < 91, "{matches} matches");
    h.run_steps(2);
    assert!(h.query_by_label(&format!("{matches} matches")).is_some());
}

#[test]
fn a_missing_file_is_a_notification_not_a_panic() {
    let mut h = harness();
    h.run_steps(2);
    h.state_mut()
        .open_dataset(std::path::Path::new("/no/such/dataset.json"), 0.0);
    assert!(step_until(&mut h, Duration::from_secs(10), |app| !app
        .notices
        .items()
        .is_empty()));
    assert!(h.state().datasets.doc.is_none());
    assert!(h.state().datasets.loading.is_none());
    h.run_steps(2);
    assert!(h.query_by_label_contains("failed").is_some());
}

#[test]
fn ctrl_s_saves_atomically_and_marks_clean() {
    let mut h = harness();
    h.run_steps(2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.json");
    std::fs::copy(fixture("llamafactory_identity.json"), &path).unwrap();
    open_dataset(&mut h, &path);
    h.run_steps(2);
    h.get_by_label("Row 1").click();
    h.run_steps(2);
    h.get_by_role_and_label(Role::MultilineTextInput, "Turn 1")
        .focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::MultilineTextInput, "Turn 1")
        .type_text(" there");
    h.run_steps(1);
    // Saving commits the draft still being typed.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::S);
    assert!(
        step_until(&mut h, Duration::from_secs(20), |app| app
            .datasets
            .doc
            .as_ref()
            .is_some_and(|d| !d.is_dirty() && d.saving.is_none())),
        "the save did not finish; notices: {:?}",
        h.state().notices.items()
    );
    let saved = finetune_studio::data::load(&path, None).unwrap();
    assert_eq!(saved.records()[0].messages[0].content, "hi there");
    assert!(finetune_studio::data::dataset::backup_path(&path).exists());
}

#[test]
fn unsaved_edits_are_autosaved_and_offered_back_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.json");
    std::fs::copy(fixture("llamafactory_identity.json"), &path).unwrap();
    let recovery = dir.path().join(".identity.json.recovery.jsonl");
    {
        let mut h = harness();
        h.run_steps(2);
        open_dataset(&mut h, &path);
        h.run_steps(2);
        h.get_by_label("Row 1").click();
        h.run_steps(2);
        h.get_by_role_and_label(Role::MultilineTextInput, "Turn 1")
            .focus();
        h.run_steps(1);
        h.get_by_role_and_label(Role::MultilineTextInput, "Turn 1")
            .type_text(" again");
        h.run_steps(1);
        h.key_press(egui::Key::Escape);
        // A pause in editing autosaves; the window then "crashes" (is dropped unsaved).
        assert!(
            step_until(&mut h, Duration::from_secs(30), |_| recovery.is_file()),
            "no recovery file; notices: {:?}",
            h.state().notices.items()
        );
        assert!(h.state().datasets.is_dirty());
    }
    let on_disk = finetune_studio::data::load(&path, None).unwrap();
    assert_eq!(on_disk.records()[0].messages[0].content, "hi");

    // The next session opens the file and is offered the edits back.
    let mut h = harness();
    h.run_steps(2);
    open_dataset(&mut h, &path);
    h.run_steps(2);
    assert!(h
        .query_by_label_contains("has unsaved edits from")
        .is_some());
    // Editing before answering the offer must not autosave over the edits it offers.
    let offered = std::fs::read(&recovery).unwrap();
    h.state_mut()
        .datasets
        .doc
        .as_mut()
        .unwrap()
        .apply(
            finetune_studio::data::Edit::DeleteRecord { index: 5 },
            -10.0,
        )
        .unwrap();
    for _ in 0..20 {
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(std::fs::read(&recovery).unwrap(), offered);
    assert!(h.state_mut().datasets.doc.as_mut().unwrap().undo(0.0));
    h.get_by_label("Restore them").click();
    assert!(step_until(&mut h, Duration::from_secs(20), |app| app
        .datasets
        .doc
        .as_ref()
        .is_some_and(|d| d.is_dirty())));
    let doc = h.state().datasets.doc.as_ref().unwrap();
    assert_eq!(doc.data().records()[0].messages[0].content, "hi again");
    assert_eq!(doc.data().len(), 91);

    // Saving writes the edits to the file and removes the recovery file.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::S);
    assert!(step_until(&mut h, Duration::from_secs(20), |app| app
        .datasets
        .doc
        .as_ref()
        .is_some_and(|d| !d.is_dirty() && d.saving.is_none())));
    let saved = finetune_studio::data::load(&path, None).unwrap();
    assert_eq!(saved.records()[0].messages[0].content, "hi again");
    assert!(!recovery.exists());

    // Declining an offer removes the recovery file and keeps the file as it is.
    std::fs::write(&recovery, b"stale").unwrap();
    h.state_mut().open_dataset(&path, 0.0);
    assert!(step_until(&mut h, Duration::from_secs(20), |app| app
        .datasets
        .recovery_offer
        .is_some()));
    h.run_steps(2);
    h.get_by_label("Discard them").click();
    assert!(step_until(&mut h, Duration::from_secs(20), |_| !recovery.exists()));
}

/// `finetune-studio FILE`: the app starts with FILE opening in the Datasets tab.
#[test]
fn a_dataset_given_at_start_opens_in_the_datasets_tab() {
    let path = fixture("llamafactory_identity.json");
    let mut h = harness_with(AppOptions {
        open_dataset: Some(path.clone()),
        ..AppOptions::headless()
    });
    assert!(
        step_until(&mut h, Duration::from_secs(20), |app| app
            .datasets
            .doc
            .is_some()),
        "the dataset did not load; notices: {:?}",
        h.state().notices.items()
    );
    assert_eq!(h.state().state.tab, Tab::Datasets);
    let doc = h.state().datasets.doc.as_ref().unwrap();
    assert_eq!(doc.data().len(), 91);
    assert_eq!(doc.data().path(), Some(path.as_path()));
    h.run_steps(2);
    assert!(h.query_by_label("Row 3").is_some());
}

/// A FILE that does not exist starts the app with the usual error notice, naming it.
#[test]
fn a_missing_dataset_given_at_start_is_an_error_notice() {
    let path = studio_home().join("no-such-dataset.json");
    let mut h = harness_with(AppOptions {
        open_dataset: Some(path.clone()),
        ..AppOptions::headless()
    });
    assert!(
        step_until(&mut h, Duration::from_secs(20), |app| app
            .notices
            .items()
            .iter()
            .any(|n| n.level == Level::Error)),
        "no error notice; notices: {:?}",
        h.state().notices.items()
    );
    let notice = h.state().notices.items()[0].clone();
    assert!(
        format!("{} {}", notice.title, notice.details).contains(&path.display().to_string()),
        "{notice:?}"
    );
    assert!(h.state().datasets.doc.is_none());
    h.run_steps(2);
    assert_eq!(h.state().state.tab, Tab::Datasets);
}

#[test]
fn contaminated_records_are_flagged_with_the_matching_text() {
    // A training file with the built-in suite's first prompt copied into record 1.
    let builtin = finetune_studio::eval::Suite::builtin().unwrap();
    let finetune_studio::eval::SuiteInput::Prompt(prompt) = &builtin.items[0].input else {
        panic!("the built-in suite starts with a prompt")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.jsonl");
    let records = [
        serde_json::json!({"instruction": "Name a planet.", "input": "", "output": "Mars."}),
        serde_json::json!({"instruction": prompt, "input": "", "output": "Paris."}),
        serde_json::json!({"instruction": "Name a river.", "input": "", "output": "The Nile."}),
    ];
    let text: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    std::fs::write(&path, text.join("\n") + "\n").unwrap();

    let mut h = harness();
    h.run_steps(2);
    open_dataset(&mut h, &path);
    h.run_steps(2);
    assert_eq!(h.state().datasets.contamination.against, "builtin");
    h.get_by_label("Check").click();
    assert!(
        step_until(&mut h, Duration::from_secs(20), |app| app
            .datasets
            .contamination
            .result
            .is_some()),
        "the contamination check never answered; notices: {:?}",
        h.state().notices.items()
    );
    h.run_steps(2);
    assert!(h.query_by_label("1 flagged against builtin").is_some());
    h.get_by_label("Contaminated (1)").click();
    h.run_steps(2);
    let app = h.state();
    let doc = app.datasets.doc.as_ref().unwrap();
    let rows = app.datasets.filter.rows(doc);
    assert_eq!((rows.len(), rows.get(0)), (1, Some(1)));

    // The editor of the flagged record shows what it shares, and with which prompt.
    h.get_by_label("Row 2").click();
    h.run_steps(2);
    assert_eq!(h.state().datasets.selected, Some(1));
    assert!(h
        .query_by_label_contains("Contaminated: shares text with builtin")
        .is_some());
    let shared = format!("{} (", builtin.items[0].id);
    let label = h.get_by_label_contains(&shared);
    assert!(
        format!("{label:?}").contains("capital of France"),
        "{label:?}"
    );
    // An unflagged record shows nothing of the kind.
    h.get_by_label("All (3)").click();
    h.run_steps(2);
    h.get_by_label("Row 1").click();
    h.run_steps(2);
    assert_eq!(h.state().datasets.selected, Some(0));
    assert!(h
        .query_by_label_contains("Contaminated: shares text with")
        .is_none());

    // A set that cannot be read fails the check, said in the form and as a notification.
    h.state_mut().datasets.contamination.against = "/nonexistent/eval.jsonl".into();
    h.run_steps(1);
    h.get_by_label("Check").click();
    assert!(
        step_until(&mut h, Duration::from_secs(20), |app| app
            .datasets
            .contamination
            .error
            .is_some()),
        "the failed check never answered"
    );
    h.run_steps(2);
    assert!(!h.state().datasets.contamination.busy());
    assert!(h.query_by_label("! check failed").is_some());
    assert!(h
        .state()
        .notices
        .items()
        .iter()
        .any(|n| format!("{n:?}").contains("/nonexistent/eval.jsonl")));
}

/// Per-record scores on a tiny model: Score fills every record in, the table sorts by the
/// loss and keeps the highest 5 %, a row opens its record with its scores above the
/// editor, an edit rescores only that record, and a comparison under an adapter orders the
/// records by how much it changed them.
#[test]
fn scores_fill_in_sort_the_table_and_follow_an_edit() {
    use finetune_studio::app::{ModelSlot, ScoreSort};
    use finetune_studio::model::Architecture;
    use finetune_studio::testkit::{write_tiny_adapter, write_tiny_model};

    let home = studio_home();
    let model_dir = write_tiny_model(&home.join("tiny-scores"), Architecture::Llama, 4).unwrap();
    let adapter_dir = home.join("tiny-scores-adapter");
    write_tiny_adapter(&adapter_dir, Architecture::Llama, 8).unwrap();
    let mut h = harness();
    h.run_steps(2);
    open_dataset(&mut h, &fixture("llamafactory_identity.json"));
    let model =
        finetune_studio::model::load_hf_folder(&model_dir, &candle_core::Device::Cpu).unwrap();
    h.state_mut().model = ModelSlot::Ready {
        spec: model_dir.display().to_string(),
        model: std::sync::Arc::new(model),
        summary: "tiny".into(),
    };
    h.state_mut().state.tab = Tab::Datasets;
    h.run_steps(3);
    h.get_by_label("Score").click();
    let all_scored = |app: &finetune_studio::app::StudioApp| {
        let s = &app.datasets.scores.primary;
        let doc = app.datasets.doc.as_ref().unwrap();
        !s.is_scoring() && doc.data().records().iter().all(|c| s.of(c).is_some())
    };
    assert!(
        step_until(&mut h, Duration::from_secs(120), all_scored),
        "the records were not all scored; notices: {:?}",
        h.state().notices.items()
    );
    assert_eq!(h.state().datasets.scores.primary.sent, 91);

    // Sorted by the loss, highest first.
    h.get_by_value("record order").click();
    h.run_steps(2);
    h.get_by_label("highest loss").click();
    h.run_steps(3);
    let losses = |app: &finetune_studio::app::StudioApp| -> Vec<f64> {
        let d = &app.datasets;
        let doc = d.doc.as_ref().unwrap();
        d.scores
            .order()
            .unwrap()
            .iter()
            .filter_map(|&i| d.scores.measure(ScoreSort::Loss, &doc.data().records()[i]))
            .collect()
    };
    let sorted = losses(h.state());
    assert_eq!(sorted.len(), 91);
    assert!(sorted.windows(2).all(|w| w[0] >= w[1]), "{sorted:?}");

    // The highest 5 %: 5 of 91 records, the hardest first; a click opens one.
    h.get_by_label("Highest 5 %").click();
    h.run_steps(3);
    let top = losses(h.state());
    assert_eq!(top.len(), 5);
    assert_eq!(top[0], sorted[0]);
    let first = h.state().datasets.scores.order().unwrap()[0];
    h.get_by_label(&format!("Row {}", first + 1)).click();
    h.run_steps(3);
    assert_eq!(h.state().datasets.selected, Some(first));
    assert!(h.query_by_label_contains("Scores: loss").is_some());

    // An edit: only that record is scored again.
    {
        let app = h.state_mut();
        let doc = app.datasets.doc.as_mut().unwrap();
        let mut record = doc.data().records()[0].clone();
        record.messages[1].content.push_str(" Indeed.");
        doc.apply(
            finetune_studio::data::edit::Edit::SetRecord { index: 0, record },
            0.0,
        )
        .unwrap();
    }
    assert!(step_until(&mut h, Duration::from_secs(60), all_scored));
    assert_eq!(h.state().datasets.scores.primary.sent, 1);

    // Compared with an adapter: the change per record, made worse most first.
    h.get_by_label("Highest 5 %").click();
    h.get_by_label("Compare with…").click();
    h.run_steps(2);
    h.state_mut().datasets.scores.compare.adapter = adapter_dir.display().to_string();
    h.get_by_label("Score comparison").click();
    assert!(
        step_until(&mut h, Duration::from_secs(120), |app| {
            let s = &app.datasets.scores.compare;
            !s.is_scoring() && s.has_scores()
        }),
        "no comparison; notices: {:?}",
        h.state().notices.items()
    );
    h.get_by_value("highest loss").click();
    h.run_steps(2);
    h.get_by_label("made worse most").click();
    h.run_steps(3);
    let app = h.state();
    let d = &app.datasets;
    let doc = d.doc.as_ref().unwrap();
    let changes: Vec<f64> = d
        .scores
        .order()
        .unwrap()
        .iter()
        .filter_map(|&i| {
            d.scores
                .measure(ScoreSort::MadeWorse, &doc.data().records()[i])
        })
        .collect();
    assert_eq!(changes.len(), 91);
    assert!(changes.windows(2).all(|w| w[0] >= w[1]));
    assert!(
        changes.iter().any(|c| c.abs() > 1e-6),
        "the adapter changed nothing"
    );
}

/// A TRL preference file opens in the Datasets tab with chosen and rejected side by side;
/// a reply is edited, the pair swapped, both undone, another pair swapped and saved
/// (atomically, the old file kept as `.bak`); an invalid pair is counted.
#[test]
fn preference_pairs_side_by_side_edit_undo_save() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.jsonl");
    let line = |q: &str, c: &str, r: &str| {
        serde_json::json!({
            "prompt": [{"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}]
        })
        .to_string()
    };
    let text = [
        line("Who are you?", "I am Studio.", "I am a model."),
        line("Your name?", "Studio.", "No name."),
        line("Broken?", "Yes.", ""),
    ]
    .join("\n");
    std::fs::write(&path, format!("{text}\n")).unwrap();

    let mut h = harness();
    h.run_steps(2);
    h.state_mut().open_dataset(&path, 0.0);
    assert!(
        step_until(&mut h, Duration::from_secs(20), |app| app
            .datasets
            .preferences
            .is_some()),
        "the preference file did not open; notices: {:?}",
        h.state().notices.items()
    );
    h.run_steps(2);
    assert!(h.state().datasets.doc.is_none());
    assert!(h.query_by_label_contains("3 preference pairs ·").is_some());
    assert!(h.query_by_label_contains("1 invalid").is_some());
    assert!(h.query_by_label("user: Who are you?").is_some());

    // Edit the chosen reply; leaving the field commits it.
    h.get_by_role_and_label(Role::MultilineTextInput, "Chosen")
        .focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::MultilineTextInput, "Chosen")
        .type_text(" Really.");
    h.run_steps(1);
    h.key_press(egui::Key::Escape);
    h.run_steps(2);
    let pairs = |h: &egui_kittest::Harness<'_, finetune_studio::app::StudioApp>| {
        h.state()
            .datasets
            .preferences
            .as_ref()
            .unwrap()
            .set
            .pairs
            .clone()
    };
    assert_eq!(pairs(&h)[0].chosen[0].content, "I am Studio. Really.");
    h.get_by_role_and_label(Role::MultilineTextInput, "Rejected");

    h.get_by_label("Swap chosen and rejected").click();
    h.run_steps(2);
    assert_eq!(pairs(&h)[0].chosen[0].content, "I am a model.");
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    h.run_steps(2);
    h.get_by_label("↶ Undo").click();
    h.run_steps(2);
    assert_eq!(pairs(&h)[0].chosen[0].content, "I am Studio.");
    assert!(!h.state().datasets.is_dirty());

    h.query_by_label_contains("2 Your name?").unwrap().click();
    h.run_steps(2);
    assert_eq!(h.state().datasets.preferences.as_ref().unwrap().selected, 1);
    h.get_by_label("Swap chosen and rejected").click();
    h.run_steps(2);
    assert!(h.state().datasets.is_dirty());
    h.get_by_label("Save").click();
    assert!(
        step_until(&mut h, Duration::from_secs(20), |app| !app
            .datasets
            .is_dirty()
            && app
                .datasets
                .preferences
                .as_ref()
                .is_some_and(|p| p.saving.is_none())),
        "the save did not finish; notices: {:?}",
        h.state().notices.items()
    );
    let back = finetune_studio::data::PreferenceSet::load(&path).unwrap();
    assert_eq!(back.pairs[1].chosen[0].content, "No name.");
    assert_eq!(back.pairs[1].rejected[0].content, "Studio.");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pairs.jsonl.bak")).unwrap(),
        format!("{text}\n")
    );
}
