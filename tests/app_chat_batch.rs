//! GUI tests of batch compare and of adding a reply to the open dataset, on a tiny random
//! model injected into the real app: two typed prompts through two panes (base, and base
//! plus an adapter) fill a 2×2 table that exports to JSONL and CSV; a batch stops when
//! asked; a chat reply, edited, becomes a new record of the open dataset, and undo
//! removes it.

mod app_common;
mod chat_common;

use std::time::Duration;

use app_common::{fixture, open_dataset, step_until, studio_home};
use chat_common::{chat_harness, done, notices, two_pane_harness, type_message};
use eframe::egui;
use egui::accesskit::Role;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use finetune_studio::app::{Cell, StudioApp, Tab};
use finetune_studio::data;

fn type_prompts(h: &mut Harness<'static, StudioApp>, lines: &[&str]) {
    h.get_by_role_and_label(Role::MultilineTextInput, "Prompts")
        .focus();
    h.run_steps(1);
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            h.key_press(egui::Key::Enter);
            h.run_steps(1);
        }
        h.get_by_role_and_label(Role::MultilineTextInput, "Prompts")
            .type_text(line);
        h.run_steps(1);
    }
}

fn reply_text(c: &Cell) -> String {
    match c {
        Cell::Done(r) => r.text.clone(),
        other => panic!("the reply did not finish: {other:?}"),
    }
}

#[test]
fn a_batch_of_two_prompts_through_two_panes_fills_the_table_and_exports() {
    let mut h = two_pane_harness("batch-adapter");
    h.state_mut().chat.max_new_tokens = 12;
    h.get_by_label("Batch compare").click();
    h.run_steps(2);
    type_prompts(&mut h, &["Who are you?", "What can you do?"]);
    assert_eq!(h.state().chat.batch.typed, "Who are you?\nWhat can you do?");

    h.get_by_label("▶ Run batch").click();
    h.run_steps(1);
    assert!(h.state().chat.batch.is_running(), "{}", notices(&h));
    assert!(
        step_until(&mut h, Duration::from_secs(120), |app| !app
            .chat
            .batch
            .is_running()),
        "{}",
        notices(&h)
    );
    let table = h.state().chat.batch.table.clone().expect("a table");
    assert_eq!(table.columns.len(), 2);
    assert_eq!(table.rows.len(), 2);
    assert_eq!(table.progress(), (4, 4));
    assert_eq!(table.rows[0].prompt, "Who are you?");
    assert_eq!(table.rows[1].prompt, "What can you do?");
    let texts: Vec<Vec<String>> = table
        .rows
        .iter()
        .map(|r| r.cells.iter().map(reply_text).collect())
        .collect();
    assert!(texts.iter().flatten().all(|t| !t.is_empty()), "{texts:?}");
    assert_ne!(texts[0][0], texts[0][1], "the adapter changes the reply");

    // The table shows every reply and the progress.
    h.run_steps(2);
    assert!(h.query_by_label("4 of 4 replies").is_some(), "the progress");
    for t in texts.iter().flatten() {
        // Random weights may give two cells the same text.
        assert!(
            h.query_all_by_label(t).next().is_some(),
            "reply {t:?} not shown"
        );
    }
    // No dataset is open: the rows cannot be added to one.
    let adds: Vec<_> = h.query_all_by_label("Add to dataset").collect();
    assert_eq!(adds.len(), 4);
    assert!(adds.iter().all(|b| b.accesskit_node().is_disabled()));

    // Export to JSONL, then CSV.
    let base = studio_home().join("batch-export").join("compare.jsonl");
    h.state_mut().chat.batch.export_path = base.display().to_string();
    h.get_by_label("Export JSONL").click();
    let jsonl = base.with_extension("jsonl");
    assert!(
        step_until(&mut h, Duration::from_secs(10), |app| exported(app, &jsonl)),
        "{}",
        notices(&h)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .expect("read jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, (row, want)) in lines.iter().zip(table.rows.iter().zip(&texts)) {
        assert_eq!(line["prompt"], row.prompt.as_str());
        for (c, text) in want.iter().enumerate() {
            assert_eq!(line["replies"][c]["text"], text.as_str());
        }
        assert_eq!(line["replies"][0]["model"], "Base model");
        assert!(line["replies"][1]["adapter"]
            .as_str()
            .is_some_and(|a| a.ends_with("batch-adapter")));
    }

    let csv_path = base.with_extension("csv");
    h.get_by_label("Export CSV").click();
    assert!(
        step_until(&mut h, Duration::from_secs(10), |app| exported(
            app, &csv_path
        )),
        "{}",
        notices(&h)
    );
    let mut reader = csv::Reader::from_path(&csv_path).expect("open csv");
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    assert_eq!(header[2], "prompt");
    assert_eq!(header.len(), 6);
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(records.len(), 2);
    for (rec, (row, want)) in records.iter().zip(table.rows.iter().zip(&texts)) {
        assert_eq!(&rec[2], row.prompt.as_str());
        assert_eq!(&rec[4], want[0].as_str());
        assert_eq!(&rec[5], want[1].as_str());
    }

    // The batch generates as the chat does: the same prompt and seed, the same reply.
    h.get_by_label("Conversation").click();
    h.run_steps(2);
    type_message(&mut h, "Who are you?");
    // Enter sends (the export notes cover the Send button for a few seconds).
    h.key_press(egui::Key::Enter);
    assert!(
        step_until(&mut h, Duration::from_secs(60), done),
        "{}",
        notices(&h)
    );
    for (c, want) in texts[0].iter().enumerate() {
        let got = h.state().chat.panes[c]
            .last_reply()
            .map(|t| t.content.clone());
        assert_eq!(got.as_deref(), Some(want.as_str()), "pane {c}");
    }
}

/// The app reported the export to `path`, and the file is there.
fn exported(app: &StudioApp, path: &std::path::Path) -> bool {
    let said = format!("Batch table exported to {}", path.display());
    path.exists() && app.notices.items().iter().any(|n| n.title == said)
}

#[test]
fn a_running_batch_stops() {
    let mut h = two_pane_harness("stop-adapter");
    {
        let chat = &mut h.state_mut().chat;
        chat.max_new_tokens = 30_000;
        chat.sampling.temperature = 0.0;
    }
    h.get_by_label("Batch compare").click();
    h.run_steps(2);
    type_prompts(
        &mut h,
        &["Tell me a long story.", "And another.", "One more."],
    );
    h.get_by_label("▶ Run batch").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |app| app
            .chat
            .batch
            .table
            .as_ref()
            .is_some_and(|t| t.rows[0]
                .cells
                .iter()
                .all(|c| matches!(c, Cell::Running)))),
        "{}",
        notices(&h)
    );
    h.get_by_label("■ Stop batch").click();
    assert!(
        step_until(&mut h, Duration::from_secs(30), |app| !app
            .chat
            .batch
            .is_running()),
        "{}",
        notices(&h)
    );
    let table = h.state().chat.batch.table.clone().expect("a table");
    let (done, total) = table.progress();
    assert_eq!(total, 6);
    assert!(done < total, "{done} of {total} replies: it did not stop");
    assert!(table.rows[2]
        .cells
        .iter()
        .all(|c| matches!(c, Cell::Waiting)));
    h.run_steps(2);
    assert!(h.query_by_label_contains("Batch stopped").is_some());
    assert!(h.query_all_by_label("not run").count() >= 2);
}

#[test]
fn an_edited_reply_becomes_a_dataset_record_and_undo_removes_it() {
    let mut h = chat_harness();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("identity.json");
    std::fs::copy(fixture("llamafactory_identity.json"), &path).expect("copy fixture");
    open_dataset(&mut h, &path);
    let before = h.state().datasets.doc.as_ref().map(|d| d.data().len());
    assert_eq!(before, Some(91));

    h.state_mut().state.tab = Tab::Chat;
    h.state_mut().chat.max_new_tokens = 12;
    h.state_mut().chat.system = "Be brief.".into();
    h.run_steps(2);
    type_message(&mut h, "Who are you?");
    h.get_by_label("Send").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), done),
        "{}",
        notices(&h)
    );
    let reply = h.state().chat.panes[0]
        .last_reply()
        .map(|t| t.content.clone())
        .expect("a reply");
    h.run_steps(1);

    let add = h.get_by_label("Add to dataset");
    assert!(!add.accesskit_node().is_disabled());
    add.click();
    h.run_steps(2);
    assert!(h.state().chat.adding.is_some(), "the dialog opened");
    assert!(h.query_by_label_contains("It becomes record 92").is_some());
    // Edit the reply before adding it.
    h.get_by_role_and_label(Role::MultilineTextInput, "Reply")
        .focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::MultilineTextInput, "Reply")
        .type_text(" Edited.");
    h.run_steps(1);
    h.get_by_label("Add example").click();
    h.run_steps(2);
    assert!(h.state().chat.adding.is_none(), "the dialog closed");

    let doc = h.state().datasets.doc.as_ref().expect("the dataset");
    assert_eq!(doc.data().len(), 92);
    assert!(doc.is_dirty());
    let added = &doc.data().records()[91];
    assert_eq!(added.system.as_deref(), Some("Be brief."));
    let turns: Vec<(data::Role, &str)> = added
        .messages
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect();
    let edited = format!("{reply} Edited.");
    assert_eq!(
        turns,
        [
            (data::Role::User, "Who are you?"),
            (data::Role::Assistant, edited.trim()),
        ]
    );
    assert!(h.query_by_label_contains("Added record 92").is_some());

    // Undo in the Datasets tab takes it out again.
    h.state_mut().state.tab = Tab::Datasets;
    h.run_steps(2);
    h.get_by_label("↶ Undo").click();
    h.run_steps(2);
    let doc = h.state().datasets.doc.as_ref().expect("the dataset");
    assert_eq!(doc.data().len(), 91);
    assert!(!doc.is_dirty());
    assert!(doc
        .data()
        .records()
        .iter()
        .all(|r| r.system.as_deref() != Some("Be brief.")));
}

#[test]
fn without_an_open_dataset_the_add_button_says_why() {
    let mut h = chat_harness();
    h.state_mut().chat.max_new_tokens = 4;
    type_message(&mut h, "Hello");
    h.get_by_label("Send").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), done),
        "{}",
        notices(&h)
    );
    h.run_steps(1);
    let add = h.get_by_label("Add to dataset");
    assert!(add.accesskit_node().is_disabled());
    add.hover();
    h.run_steps(8);
    assert!(h.query_by_label_contains("No dataset is open").is_some());
}
