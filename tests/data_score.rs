//! Per-record scores on a tiny random model: the loss, perplexity and IFD of
//! `train::score` equal their direct computation from the logits of each record alone;
//! records scored together score as they do alone; a record without an assistant turn says
//! so; an adapter changes the scores; and `dataset score` writes them as CSV or JSONL, with
//! `--compare` the change per record.

mod common;

use std::path::Path;

use candle_core::Device;
use finetune_studio::data::{Conversation, Message, Role};
use finetune_studio::model::config::Architecture;
use finetune_studio::model::{self, ChatMessage, Model};
use finetune_studio::testkit::{write_tiny_adapter, write_tiny_model};
use finetune_studio::train::batch::tokenize_conversation;
use finetune_studio::train::score::score_records;

fn conv(prompt: &str, answer: &str) -> Conversation {
    Conversation {
        messages: vec![
            Message::new(Role::User, prompt),
            Message::new(Role::Assistant, answer),
        ],
        ..Default::default()
    }
}

/// Mean cross-entropy of the tokens of `ids` marked in `train` (each predicted from those
/// before it), from the model's logits of the whole sequence.
fn direct_mean_loss(m: &Model, ids: &[u32], train: &[bool]) -> f64 {
    let logits: Vec<Vec<f32>> = common::logits(m, None, None, ids).to_vec2().unwrap();
    let (mut sum, mut n) = (0f64, 0usize);
    for i in 1..ids.len() {
        if !train[i] {
            continue;
        }
        let row = &logits[i - 1];
        let max = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        sum += lse - row[ids[i] as usize] as f64;
        n += 1;
    }
    sum / n as f64
}

fn tiny(dir: &Path) -> (std::path::PathBuf, Model) {
    let path = write_tiny_model(&dir.join("model"), Architecture::Llama, 5).unwrap();
    let m = model::load_hf_folder(&path, &Device::Cpu).unwrap();
    (path, m)
}

#[test]
fn loss_perplexity_and_ifd_equal_their_direct_computation() {
    let dir = tempfile::tempdir().unwrap();
    let (_, m) = tiny(dir.path());
    let records = [
        conv("Name three colors.", "Red, green and blue."),
        conv("Count to five.", "one two three four five"),
        conv("Say hi.", "Hi there, how are you today?"),
    ];
    let refs: Vec<&Conversation> = records.iter().collect();
    let scores = score_records(&m, None, &refs, 256).unwrap();
    for (c, s) in records.iter().zip(&scores) {
        let s = s.as_ref().unwrap();
        let msgs: Vec<ChatMessage> = c
            .to_chat_messages()
            .into_iter()
            .map(|(r, t)| ChatMessage::new(r, t))
            .collect();
        let ex = tokenize_conversation(&m, &msgs, 256, false).unwrap();
        let loss = direct_mean_loss(&m, &ex.ids, &ex.train);
        assert!((s.loss - loss).abs() < 1e-4, "loss {} vs {loss}", s.loss);
        assert_eq!(s.tokens, ex.trained_tokens());
        assert!((s.perplexity - loss.exp()).abs() < 1e-3 * loss.exp());
        let answer = m.tokenizer.encode(&c.messages[1].content, true).unwrap();
        let alone = direct_mean_loss(&m, &answer, &vec![true; answer.len()]);
        let ifd = s.ifd.unwrap();
        assert!(
            (ifd - loss / alone).abs() < 1e-4,
            "IFD {ifd} vs {}",
            loss / alone
        );
    }
    // Alone, each record scores as it did in company.
    for (c, s) in records.iter().zip(&scores) {
        let one = score_records(&m, None, &[c], 256).unwrap();
        let a = one[0].as_ref().unwrap();
        let b = s.as_ref().unwrap();
        assert!((a.loss - b.loss).abs() < 1e-5 && (a.ifd.unwrap() - b.ifd.unwrap()).abs() < 1e-5);
    }
}

#[test]
fn a_record_without_an_answer_says_so_and_an_adapter_changes_the_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (_, m) = tiny(dir.path());
    let no_answer = Conversation {
        messages: vec![Message::new(Role::User, "Anyone there?")],
        ..Default::default()
    };
    let good = conv("Name a fruit.", "An apple, a pear or a plum.");
    let scores = score_records(&m, None, &[&no_answer, &good], 256).unwrap();
    let err = scores[0].as_ref().unwrap_err();
    assert!(err.contains("no assistant text"), "{err}");
    let base = scores[1].as_ref().unwrap().loss;

    let adir = dir.path().join("adapter");
    write_tiny_adapter(&adir, Architecture::Llama, 9).unwrap();
    let lora = finetune_studio::adapter::read_adapter(&adir, m.config(), &Device::Cpu)
        .unwrap()
        .lora;
    let tuned = score_records(&m, Some(&lora), &[&good], 256).unwrap();
    let tuned = tuned[0].as_ref().unwrap().loss;
    assert!(
        (tuned - base).abs() > 1e-4,
        "the adapter changed nothing: {base} {tuned}"
    );
}

#[test]
fn dataset_score_writes_columns_and_the_change_under_a_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let (mpath, _) = tiny(dir.path());
    let adir = dir.path().join("adapter");
    write_tiny_adapter(&adir, Architecture::Llama, 9).unwrap();
    let data = dir.path().join("d.json");
    std::fs::write(
        &data,
        r#"[{"instruction": "Name a fruit.", "input": "", "output": "An apple."},
            {"instruction": "Name a tree.", "input": "", "output": "An oak, a birch or a pine."},
            {"instruction": "Name a bird.", "input": "", "output": "A robin."}]"#,
    )
    .unwrap();
    let run = |out: &Path, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_finetune-studio"))
            .args(["dataset", "score"])
            .arg(&data)
            .arg("--model")
            .arg(&mpath)
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let csv_out = dir.path().join("scores.csv");
    let o = run(&csv_out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&csv_out).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "record,tokens,loss,perplexity,ifd,error"
    );
    assert_eq!(lines.count(), 3);

    let jsonl_out = dir.path().join("scores.jsonl");
    let adapter = adir.display().to_string();
    let o = run(&jsonl_out, &["--adapter", &adapter, "--compare", "base"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("compared:"), "{stderr}");
    for line in std::fs::read_to_string(&jsonl_out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (a, b) = (
            v["loss"].as_f64().unwrap(),
            v["compare_loss"].as_f64().unwrap(),
        );
        let change = v["loss_change"].as_f64().unwrap();
        assert!((change - (b - a)).abs() < 1e-9);
        assert!(
            change.abs() > 1e-6,
            "the adapter and the base score alike: {line}"
        );
    }

    let o = run(&dir.path().join("scores.txt"), &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("scores.txt"));
}
