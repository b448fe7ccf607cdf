//! Chosen chat templates and thinking models: every named template renders a fixed
//! conversation exactly; a template whose special tokens the tokenizer lacks is refused by
//! name; a template other than the model's own warns; `enable_thinking` changes the
//! prompt; `run.toml` keeps the choice; a run trained with a chosen template writes it
//! beside its adapters, chat picks it up from there, and the PEFT, merged and GGUF exports
//! (and the Ollama Modelfile) carry it; reasoning blocks are stripped on request and
//! counted.

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use finetune_studio::data::{Conversation, Dataset, Format, Message, Role};
use finetune_studio::export::gguf::GgufType;
use finetune_studio::export::job::{self, ExportFormat, ExportRequest};
use finetune_studio::model::config::Architecture;
use finetune_studio::model::{self, ChatMessage, ChatTemplate, Model};
use finetune_studio::testkit::{write_echo_dataset, write_tiny_model};
use finetune_studio::text::{NamedTemplate, TemplateChoice, TemplateSource};
use finetune_studio::train::config::{EvalSplit, RunConfig};
use finetune_studio::train::trainer::{self, Start};

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello!"),
        ChatMessage::new("user", "Bye"),
    ]
}

fn render(t: NamedTemplate) -> String {
    let tmpl = ChatTemplate::new(t.source(), t.name(), Some("<s>"), Some("</s>")).unwrap();
    tmpl.render(&conversation(), true)
        .unwrap_or_else(|e| panic!("{}: {e}", t.name()))
}

#[test]
fn each_named_template_renders_the_fixed_conversation_exactly() {
    let expected = [
        (
            NamedTemplate::Chatml,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            NamedTemplate::Gemma,
            "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
        ),
        (
            NamedTemplate::Llama3,
            "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        ),
        (
            NamedTemplate::Mistral,
            "<s>[INST] Be brief.\n\nHi [/INST] Hello!</s>[INST] Bye [/INST]",
        ),
        (
            NamedTemplate::Alpaca,
            "<s>Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!</s>\n\n### Instruction:\nBye\n\n### Response:\n",
        ),
        (
            NamedTemplate::Plain,
            "<s>Be brief.\n\nUser: Hi\n\nAssistant: Hello!</s>\n\nUser: Bye\n\nAssistant:",
        ),
        (
            NamedTemplate::Qwen3,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
        ),
    ];
    assert_eq!(expected.len(), NamedTemplate::ALL.len());
    for (t, want) in expected {
        assert_eq!(render(t), want, "{}", t.name());
    }
}

#[test]
fn assistant_spans_of_every_named_template_are_the_reply_and_its_end() {
    let msgs = [
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello!"),
    ];
    let want = [
        (NamedTemplate::Chatml, "Hello!<|im_end|>\n"),
        (NamedTemplate::Gemma, "Hello!<end_of_turn>\n"),
        (NamedTemplate::Llama3, "Hello!<|eot_id|>"),
        (NamedTemplate::Mistral, " Hello!</s>"),
        (NamedTemplate::Alpaca, "Hello!</s>\n\n"),
        (NamedTemplate::Plain, " Hello!</s>\n\n"),
        (
            NamedTemplate::Qwen3,
            "<think>\n\n</think>\n\nHello!<|im_end|>\n",
        ),
    ];
    for (t, span) in want {
        let tmpl = ChatTemplate::new(t.source(), t.name(), Some("<s>"), Some("</s>")).unwrap();
        let (text, spans) = tmpl.render_with_assistant_spans(&msgs).unwrap();
        assert_eq!(spans.len(), 1, "{}", t.name());
        assert_eq!(&text[spans[0].clone()], span, "{}", t.name());
    }
    // Qwen3 drops the reasoning of earlier turns, so a longer conversation's spans cannot
    // be located: an error that says so, never a wrong mask.
    let qwen3 = NamedTemplate::Qwen3;
    let tmpl = ChatTemplate::new(qwen3.source(), qwen3.name(), None, None).unwrap();
    let two_turns = [
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello!"),
        ChatMessage::new("user", "Bye"),
        ChatMessage::new("assistant", "Bye!"),
    ];
    let e = tmpl
        .render_with_assistant_spans(&two_turns)
        .unwrap_err()
        .to_string();
    assert!(e.contains("qwen3") && e.contains("not a prefix"), "{e}");
}

/// The tiny test model: byte-level BPE with the ChatML specials, ChatML as its own
/// template, `<|im_end|>` as EOS.
fn tiny() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let mdir = write_tiny_model(&dir.path().join("model"), Architecture::Llama, 11).unwrap();
    let m = model::load_hf_folder(&mdir, &Device::Cpu).unwrap();
    (dir, m)
}

#[test]
fn a_template_whose_special_tokens_the_tokenizer_lacks_is_refused_by_name() {
    let (_dir, m) = tiny();
    for (t, token) in [
        (NamedTemplate::Gemma, "<start_of_turn>"),
        (NamedTemplate::Llama3, "<|start_header_id|>"),
    ] {
        let e = m
            .with_template(Some(&TemplateSource::named(t)), None)
            .err()
            .unwrap_or_else(|| panic!("{} was accepted", t.name()))
            .to_string();
        assert!(e.contains(t.name()) && e.contains(token), "{e}");
    }
    // A template file that writes a marker the tokenizer lacks warns, naming both.
    let file = TemplateSource {
        name: "mine.jinja".into(),
        source: "{% for m in messages %}{{ m.content }}<|eot_id|>{% endfor %}".into(),
        named: None,
    };
    let t = m.with_template(Some(&file), None).unwrap();
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("mine.jinja") && w.contains("<|eot_id|>")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn another_template_than_the_models_own_warns_and_stops_at_its_end_token() {
    let (_dir, m) = tiny();
    assert!(m.own_template);
    let alpaca = m
        .with_template(Some(&TemplateSource::named(NamedTemplate::Alpaca)), None)
        .unwrap();
    assert!(
        alpaca
            .warnings
            .iter()
            .any(|w| w.contains("alpaca") && w.contains("not the model's own")),
        "{:?}",
        alpaca.warnings
    );
    let eos = m.tokenizer.token_to_id("<|im_end|>").unwrap();
    assert!(alpaca.model.stop_token_ids.contains(&eos));
    assert_eq!(alpaca.model.template.stop_strings(), ["### Instruction:"]);
    let text = alpaca
        .model
        .template
        .render(&[ChatMessage::new("user", "Hi")], true)
        .unwrap();
    assert!(
        text.contains("### Instruction:\nHi\n\n### Response:\n"),
        "{text}"
    );
    // ChatML is the tiny model's own: no warning.
    let own = m
        .with_template(Some(&TemplateSource::named(NamedTemplate::Chatml)), None)
        .unwrap();
    assert!(own.warnings.is_empty(), "{:?}", own.warnings);
}

#[test]
fn enable_thinking_changes_the_rendered_prompt() {
    let (_dir, m) = tiny();
    let qwen3 = TemplateSource::named(NamedTemplate::Qwen3);
    let prompt = |thinking: Option<bool>| {
        let t = m.with_template(Some(&qwen3), thinking).unwrap();
        assert!(t.model.template.has_thinking_switch());
        t.model
            .template
            .render(&[ChatMessage::new("user", "Hi")], true)
            .unwrap()
    };
    let off = prompt(Some(false));
    let on = prompt(Some(true));
    let default = prompt(None);
    assert_eq!(
        off,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
    assert_eq!(
        on,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(default, on);
    // A template without the switch says the setting does nothing.
    let alpaca = m
        .with_template(
            Some(&TemplateSource::named(NamedTemplate::Alpaca)),
            Some(false),
        )
        .unwrap();
    assert!(
        alpaca.warnings.iter().any(|w| w.contains("thinking")),
        "{:?}",
        alpaca.warnings
    );
}

#[test]
fn run_toml_keeps_the_template_the_thinking_switch_and_strip_reasoning() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RunConfig::default();
    cfg.data.path = dir.path().join("d.jsonl");
    cfg.model.template = Some("qwen3".into());
    cfg.model.enable_thinking = Some(false);
    cfg.data.strip_reasoning = true;
    let back = RunConfig::from_toml(&cfg.to_toml()).unwrap();
    assert_eq!(back, cfg);
    assert_eq!(
        back.model.template_choice(),
        TemplateChoice::Named(NamedTemplate::Qwen3)
    );
    // A template file relative to the config is made absolute when it is read.
    let path = dir.path().join("run.toml");
    std::fs::write(
        &path,
        "[model]\ntemplate = \"t/chat.jinja\"\n[data]\npath = \"d.jsonl\"\n",
    )
    .unwrap();
    let loaded = RunConfig::load(&path).unwrap();
    assert_eq!(
        loaded.model.template_choice(),
        TemplateChoice::File(dir.path().join("t/chat.jinja"))
    );
    // An empty template is a problem the form shows, not the model's own by accident.
    let mut empty = cfg.clone();
    empty.model.template = Some(String::new());
    assert!(
        empty.validate().iter().any(|p| p.contains("template")),
        "{:?}",
        empty.validate()
    );
}

fn run_cfg(dir: &Path, model: &Model) -> RunConfig {
    let base = finetune_studio::model::location_path(&model.location);
    let data = write_echo_dataset(dir).unwrap();
    let mut cfg = common::tiny_run_config(&base, data, dir.join("runs"));
    cfg.data.max_seq_len = 96;
    cfg.training.max_steps = Some(2);
    cfg.training.eval_every = 0;
    cfg.training.save_every = 2;
    cfg
}

fn chat_template_in(path: &Path) -> String {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["chat_template"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no chat_template", path.display()))
        .to_string()
}

#[test]
fn a_runs_template_reaches_its_adapters_chat_and_every_export() {
    let (dir, m) = tiny();
    let m = Arc::new(m);
    let mut cfg = run_cfg(dir.path(), &m);
    cfg.model.template = Some("plain".into());
    let mut control = common::LogLines::default();
    let summary = trainer::run(cfg, m.clone(), Start::Fresh, None, &mut control).unwrap();
    assert!(
        control.0.iter().any(|l| l.contains("not the model's own")),
        "the run warns: {:?}",
        control.0
    );
    let plain = NamedTemplate::Plain.source();
    let adapter = summary.adapter_dir.unwrap();
    assert_eq!(
        chat_template_in(&adapter.join("tokenizer_config.json")),
        plain
    );
    let checkpoint = summary.run_dir.join("checkpoints").join("step-2");
    assert_eq!(
        chat_template_in(&checkpoint.join("tokenizer_config.json")),
        plain
    );

    // Chat with the adapter renders with its run's template, unasked.
    let chat =
        finetune_studio::worker::chat_job::templated(&m, &Default::default(), Some(&adapter))
            .unwrap();
    assert_eq!(chat.template.source(), plain);
    assert_eq!(chat.template.stop_strings(), ["\nUser:"]);
    // The base alone keeps the model's own.
    let base = finetune_studio::worker::chat_job::templated(&m, &Default::default(), None).unwrap();
    assert_eq!(base.template.source(), m.template.source());

    for format in [
        ExportFormat::Peft,
        ExportFormat::Merged,
        ExportFormat::Gguf(GgufType::F32),
    ] {
        let out = dir.path().join(format.folder_name());
        let req = ExportRequest {
            adapter: Some(adapter.clone()),
            format,
            out: out.clone(),
            verify: true,
        };
        job::export(&m, &req, &mut |_| {}).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        match format {
            ExportFormat::Gguf(_) => {
                let back = model::load_gguf(&out.join("model.gguf"), &Device::Cpu).unwrap();
                assert!(back.own_template, "the GGUF has tokenizer.chat_template");
                assert_eq!(back.template.source(), plain);
                let modelfile = std::fs::read_to_string(out.join("Modelfile")).unwrap();
                assert!(
                    modelfile.contains("TEMPLATE \"\"\"")
                        && modelfile.contains("User: {{ .Content }}")
                        && modelfile.contains("PARAMETER stop \"<|im_end|>\"")
                        && modelfile.contains("PARAMETER stop \"User:\""),
                    "{modelfile}"
                );
            }
            _ => assert_eq!(
                chat_template_in(&out.join("tokenizer_config.json")),
                plain,
                "{format:?}"
            ),
        }
    }
}

#[test]
fn a_thinking_run_keeps_its_switch_in_the_adapters_template() {
    let (dir, m) = tiny();
    let m = Arc::new(m);
    let mut cfg = run_cfg(dir.path(), &m);
    cfg.model.template = Some("qwen3".into());
    cfg.model.enable_thinking = Some(false);
    let summary = trainer::run(
        cfg,
        m.clone(),
        Start::Fresh,
        None,
        &mut common::LogLines::default(),
    )
    .unwrap();
    let adapter = summary.adapter_dir.unwrap();
    let hi = [ChatMessage::new("user", "Hi")];
    let spec = |thinking| finetune_studio::worker::chat_job::TemplateSpec {
        choice: TemplateChoice::Own,
        thinking,
    };
    let chat =
        finetune_studio::worker::chat_job::templated(&m, &spec(None), Some(&adapter)).unwrap();
    assert!(chat
        .template
        .render(&hi, true)
        .unwrap()
        .ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
    // The chat's own switch overrides the run's default.
    // The GGUF export's Modelfile answers after the empty reasoning block, as the run did.
    let out = dir.path().join("gguf");
    let req = ExportRequest {
        adapter: Some(adapter.clone()),
        format: ExportFormat::Gguf(GgufType::F32),
        out: out.clone(),
        verify: false,
    };
    job::export(&m, &req, &mut |_| {}).unwrap();
    let modelfile = std::fs::read_to_string(out.join("Modelfile")).unwrap();
    assert!(
        modelfile.contains("<|im_start|>assistant\n<think>\n\n</think>\n\n\"\"\""),
        "{modelfile}"
    );
    let on = finetune_studio::worker::chat_job::templated(&m, &spec(Some(true)), Some(&adapter))
        .unwrap();
    assert!(on
        .template
        .render(&hi, true)
        .unwrap()
        .ends_with("<|im_start|>assistant\n"));
}

fn think_record(answer: &str, reasoning: Option<&str>) -> Conversation {
    let content = match reasoning {
        Some(r) => format!("<think>\n{r}\n</think>\n\n{answer}"),
        None => answer.to_string(),
    };
    Conversation {
        messages: vec![
            Message::new(Role::User, "question"),
            Message::new(Role::Assistant, content),
        ],
        ..Default::default()
    }
}

#[test]
fn reasoning_blocks_are_counted_and_stripped_before_tokenizing() {
    let records = vec![
        think_record("yes", Some("a long chain of thought about it")),
        think_record("no", None),
        think_record("maybe", Some("more thinking")),
    ];
    let ds = Dataset::from_records(records.clone(), Format::OPENAI);
    let stats =
        finetune_studio::data::stats::compute(&ds, &finetune_studio::data::WhitespaceCounter, 512);
    assert_eq!(stats.records_with_reasoning, 2);

    let (dir, m) = tiny();
    let path = dir.path().join("think.jsonl");
    let lines: Vec<String> = records
        .iter()
        .cycle()
        .take(12)
        .map(|c| {
            serde_json::json!({"messages": [
                {"role": "user", "content": c.messages[0].content},
                {"role": "assistant", "content": c.messages[1].content},
            ]})
            .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let mut cfg = run_cfg(dir.path(), &m);
    cfg.data.path = path;
    cfg.data.eval_split = EvalSplit::Count(0);
    let tokens = |cfg: &RunConfig| {
        let plan = finetune_studio::train::plan::plan(cfg, &m).unwrap();
        let n: usize = plan.prepared.train.iter().map(|e| e.ids.len()).sum();
        (n, plan.notes)
    };
    let (kept, _) = tokens(&cfg);
    cfg.data.strip_reasoning = true;
    let (stripped, notes) = tokens(&cfg);
    assert!(stripped < kept, "{stripped} tokens stripped, {kept} kept");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("removed reasoning blocks from 8 of 12 records")),
        "{notes:?}"
    );
}

fn studio(home: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_finetune-studio"))
        .args(args)
        .env("FINETUNE_STUDIO_HOME", home)
        .output()
        .unwrap()
}

#[test]
fn the_cli_trains_and_chats_with_a_chosen_template_and_thinking_switch() {
    let (dir, m) = tiny();
    let home = dir.path().join("home");
    let model_dir = finetune_studio::model::location_path(&m.location);
    let model_arg = model_dir.to_str().unwrap();
    let chat = |extra: &[&str]| {
        let mut args = vec![
            "chat",
            "--model",
            model_arg,
            "--prompt",
            "Hi",
            "--json",
            "--max-tokens",
            "1",
            "--temperature",
            "0",
        ];
        args.extend_from_slice(extra);
        studio(&home, &args)
    };
    let prompt_ids = |out: &std::process::Output| -> Vec<u32> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        serde_json::from_value(json["prompt_ids"].clone()).unwrap()
    };
    let off = prompt_ids(&chat(&["--template", "qwen3", "--thinking", "off"]));
    let want = m
        .tokenizer
        .encode(
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            false,
        )
        .unwrap();
    assert_eq!(off, want);
    let on = prompt_ids(&chat(&["--template", "qwen3", "--thinking", "on"]));
    assert!(on.len() < off.len() && off.starts_with(&on));

    let refused = chat(&["--template", "gemma"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("gemma") && stderr.contains("<start_of_turn>"),
        "{stderr}"
    );

    // `train --template` overrides the config and the run remembers it.
    let mut cfg = run_cfg(dir.path(), &m);
    cfg.model.base = model_arg.to_string();
    let config = dir.path().join("run.toml");
    std::fs::write(&config, cfg.to_toml()).unwrap();
    let out = studio(
        &home,
        &[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--template",
            "plain",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("not the model's own"), "{stderr}");
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 1);
    let (_, written) = finetune_studio::train::run_dir::RunDir::open(&runs[0]).unwrap();
    assert_eq!(written.model.template.as_deref(), Some("plain"));
    assert_eq!(
        chat_template_in(&runs[0].join("adapter").join("tokenizer_config.json")),
        NamedTemplate::Plain.source()
    );
}
