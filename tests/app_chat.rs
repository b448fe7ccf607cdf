//! GUI tests of the Chat tab on a tiny random model injected into the real app: send a
//! prompt and watch the reply stream in and finish, stop a long reply, and send one prompt
//! to two panes side by side (base, and base plus an adapter on the same weights).

mod app_common;
mod chat_common;

use std::time::Duration;

use app_common::{step_until, studio_home};
use chat_common::{chat_harness, done, notices, type_message, write_random_adapter};
use eframe::egui;
use egui_kittest::kittest::Queryable;
use finetune_studio::app::Turn;
use finetune_studio::infer::StopReason;

#[test]
fn send_streams_a_reply_and_finishes() {
    let mut h = chat_harness();
    h.state_mut().chat.max_new_tokens = 24;
    type_message(&mut h, "Who are you?");
    h.get_by_label("Send").click();
    h.run_steps(1);
    assert!(
        step_until(&mut h, Duration::from_secs(60), done),
        "{}",
        notices(&h)
    );
    let pane = &h.state().chat.panes[0];
    assert_eq!(pane.turns.len(), 2);
    assert_eq!(pane.turns[0].content, "Who are you?");
    let reply = pane.turns[1].content.clone();
    let stats = pane.turns[1].stats.clone().expect("stats");
    assert!(stats.generated_tokens > 0 && stats.generated_tokens <= 24);
    assert!(!reply.is_empty());
    assert!(h.state().chat.input.is_empty(), "the input box is cleared");
    h.run_steps(2);
    // The reply and its tokens/s are shown.
    assert!(
        h.query_by_label(&reply).is_some(),
        "reply {reply:?} not shown"
    );
    assert!(h.query_by_label_contains("tok/s").is_some());

    // Regenerate with the same seed gives the same reply.
    h.get_by_label("↻ Regenerate").click();
    h.run_steps(1);
    assert!(
        step_until(&mut h, Duration::from_secs(60), done),
        "{}",
        notices(&h)
    );
    assert_eq!(h.state().chat.panes[0].turns.len(), 2);
    assert_eq!(h.state().chat.panes[0].turns[1].content, reply);

    // Copy puts the reply on the clipboard.
    h.get_by_label("Copy").click();
    h.step();
    let copied = h
        .output()
        .platform_output
        .commands
        .iter()
        .any(|c| matches!(c, egui::OutputCommand::CopyText(t) if *t == reply));
    assert!(copied, "{:?}", h.output().platform_output.commands);

    // Save writes the conversation as JSON.
    let path = studio_home().join("chat-save").join("c.json");
    h.state_mut().chat.save_path = path.display().to_string();
    h.get_by_label("Save JSON").click();
    assert!(step_until(&mut h, Duration::from_secs(10), |_| path.exists()));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    assert_eq!(json["panes"][0]["messages"][1]["content"], reply.as_str());

    // Edit last takes the prompt back into the input box; resending gives the same reply.
    h.get_by_label("Edit last").click();
    h.run_steps(1);
    assert_eq!(h.state().chat.input, "Who are you?");
    assert!(h.state().chat.panes[0].turns.is_empty());
    h.get_by_label("Send").click();
    h.run_steps(1);
    assert!(
        step_until(&mut h, Duration::from_secs(60), done),
        "{}",
        notices(&h)
    );
    assert_eq!(h.state().chat.panes[0].turns[1].content, reply);

    h.get_by_label("Clear").click();
    h.run_steps(1);
    assert!(h.state().chat.panes[0].turns.is_empty());
}

#[test]
fn stop_cancels_a_long_reply() {
    let mut h = chat_harness();
    {
        let chat = &mut h.state_mut().chat;
        chat.max_new_tokens = 30_000;
        chat.sampling.temperature = 0.0;
    }
    type_message(&mut h, "Tell me a long story.");
    h.get_by_label("Send").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |app| app.chat.panes[0]
            .last_reply()
            .is_some_and(|t| !t.content.is_empty())),
        "{}",
        notices(&h)
    );
    assert!(h.state().chat.is_generating(), "the reply ended by itself");
    h.get_by_label("■ Stop").click();
    assert!(
        step_until(&mut h, Duration::from_secs(30), done),
        "{}",
        notices(&h)
    );
    let reply = h.state().chat.panes[0]
        .last_reply()
        .cloned()
        .expect("reply");
    assert_eq!(reply.stop_reason, Some(StopReason::Cancelled));
    let stats = reply.stats.expect("stats");
    assert!(stats.generated_tokens < 1000, "it stopped early");
    eprintln!(
        "stopped after {} tokens at {:.0} tok/s",
        stats.generated_tokens, stats.decode_tokens_per_s
    );
    h.run_steps(2);
    assert!(h.query_by_label_contains("stopped").is_some());
}

#[test]
fn side_by_side_sends_the_same_prompt_to_both_panes() {
    let adapter = studio_home().join("chat-adapter");
    write_random_adapter(&adapter);
    let mut h = chat_harness();
    h.state_mut().chat.max_new_tokens = 16;
    h.get_by_label("2 panes").click();
    h.run_steps(2);
    assert_eq!(h.state().chat.panes.len(), 2);
    {
        let pane = &mut h.state_mut().chat.panes[1];
        pane.use_adapter = true;
        pane.adapter_dir = adapter.display().to_string();
    }
    h.run_steps(1);
    assert!(h.query_by_label_contains("Base + chat-adapter").is_some());

    type_message(&mut h, "Who are you?");
    // Enter sends (the input box has the focus).
    h.key_press(egui::Key::Enter);
    h.run_steps(1);
    assert!(h.state().chat.input.is_empty(), "Enter sent the message");
    assert!(
        h.state()
            .chat
            .panes
            .iter()
            .all(|p| p.is_generating() || p.last_reply().is_some()),
        "both panes started"
    );
    assert!(
        step_until(&mut h, Duration::from_secs(60), done),
        "{}",
        notices(&h)
    );
    let replies: Vec<String> = h
        .state()
        .chat
        .panes
        .iter()
        .map(|p| {
            assert_eq!(p.turns[0].content, "Who are you?");
            p.last_reply()
                .map(|t| t.content.clone())
                .unwrap_or_default()
        })
        .collect();
    assert!(replies.iter().all(|r| !r.is_empty()), "{replies:?}");
    assert_ne!(replies[0], replies[1], "the adapter changes the reply");
    h.run_steps(2);
    for r in &replies {
        assert!(h.query_by_label(r).is_some(), "reply {r:?} not shown");
    }
    assert_eq!(h.query_all_by_label_contains("tok/s").count(), 2);
    // The controls under the panes stay inside the window.
    let bottom = h.get_by_label("Save JSON").rect().max.y;
    assert!(bottom <= 800.0, "the buttons end at y = {bottom}");
}

#[test]
fn a_missing_adapter_folder_is_reported_in_its_pane() {
    let mut h = chat_harness();
    h.state_mut().chat.max_new_tokens = 8;
    h.get_by_label("2 panes").click();
    h.run_steps(1);
    {
        let pane = &mut h.state_mut().chat.panes[1];
        pane.use_adapter = true;
        pane.adapter_dir = studio_home().join("no-such-adapter").display().to_string();
    }
    type_message(&mut h, "Hello");
    h.get_by_label("Send").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |app| !app
            .chat
            .is_generating()
            && app.chat.panes[1].error.is_some()),
        "{}",
        notices(&h)
    );
    // The base pane replied; the other one says why it could not.
    assert!(h.state().chat.panes[0].last_reply().is_some());
    assert!(h.state().chat.panes[1].last_reply().is_none());
    h.run_steps(1);
    assert!(h.query_by_label_contains("reading the adapter").is_some());
}

#[test]
fn replies_render_as_markdown_unless_turned_off() {
    let mut h = chat_harness();
    let reply = "Here is **bold** text and a list:\n\n- first item\n- second item\n\n`code`";
    for (role, content) in [("user", "Show me Markdown"), ("assistant", reply)] {
        h.state_mut().chat.panes[0].turns.push(Turn {
            role: role.into(),
            content: content.into(),
            stop_reason: None,
            stats: None,
        });
    }
    h.state_mut().chat.markdown = true;
    h.run_steps(2);
    // Rendered: the list items stand alone and no `**` or `- ` markers show.
    assert!(h.query_by_label_contains("first item").is_some());
    assert!(h.query_by_label_contains("**bold**").is_none());
    assert!(h.query_by_label(reply).is_none());
    // Plain: the reply exactly as generated.
    h.get_by_label("Markdown").click();
    h.run_steps(2);
    assert!(!h.state().chat.markdown);
    assert!(h.query_by_label(reply).is_some());
}
