//! The hand-off to LLaMA-Factory and axolotl without either engine: the project a run is
//! written as (data split as the trainer splits it, config YAML with the run's settings
//! under the keys each engine's own argument schema knows, launch files, README), the
//! folders it refuses, and the way back: an engine's output folder imported as a run with
//! its curves, adapter and checkpoints, which cannot be resumed here.
//!
//! `tests/fixtures/handoff/` holds what the real engines define and write, both made by
//! `tools/handoff-check` (`UPDATE_FIXTURES=1`): `<engine>_keys.txt`, every key the
//! engine's config schema accepts (LLaMA-Factory 0.9.5's argument dataclasses, axolotl
//! 0.19.0's config and dataset models), and `<engine>_output/`, the `trainer_state.json`
//! (and LLaMA-Factory's `trainer_log.jsonl`) of a real run of an exported project.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use finetune_studio::handoff::{self, Engine, HandoffRequest};
use finetune_studio::model::{Architecture, Model};
use finetune_studio::testkit::{write_tiny_adapter, write_tiny_model};
use finetune_studio::train::config::EvalSplit;
use finetune_studio::train::RunConfig;
use serde_yaml_ng::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The identity run of `examples/identity.toml` on a tiny model.
fn identity_run(dir: &Path) -> (RunConfig, Model) {
    let model_dir = write_tiny_model(&dir.join("tiny"), Architecture::Llama, 3).unwrap();
    let mut cfg = RunConfig::default();
    cfg.model.base = model_dir.display().to_string();
    cfg.data.path = fixture("llamafactory_identity.json");
    cfg.data.replace = vec![
        ("{{name}}".into(), "Nova".into()),
        ("{{author}}".into(), "Orchid Labs".into()),
    ];
    cfg.data.eval_split = EvalSplit::Count(4);
    cfg.data.max_seq_len = 256;
    cfg.optim.learning_rate = 1e-3;
    cfg.optim.warmup_ratio = 0.05;
    cfg.training.epochs = 5.0;
    cfg.training.eval_every = 20;
    cfg.training.save_every = 20;
    cfg.output.name = "identity".into();
    let model = finetune_studio::hub::load(&cfg.model.base).unwrap();
    (cfg, model)
}

fn request(engine: Engine, out: &Path) -> HandoffRequest {
    HandoffRequest {
        engine,
        out: out.to_path_buf(),
        base_model: Some("HuggingFaceTB/SmolLM2-135M-Instruct".into()),
        write_base: false,
        cpu: false,
    }
}

/// The keys an engine's config schema accepts (`tests/fixtures/handoff/<engine>_keys.txt`).
fn known_keys(engine: &str) -> BTreeSet<String> {
    std::fs::read_to_string(fixture(&format!("handoff/{engine}_keys.txt")))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn yaml(path: &Path) -> serde_yaml_ng::Mapping {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

fn get<'a>(m: &'a serde_yaml_ng::Mapping, key: &str) -> &'a Value {
    m.get(key)
        .unwrap_or_else(|| panic!("`{key}` missing from {m:?}"))
}

#[test]
fn a_run_becomes_a_llamafactory_project_with_its_settings_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, model) = identity_run(dir.path());
    let out = dir.path().join("lf");
    let report = handoff::export_project(
        &cfg,
        &model,
        &request(Engine::LlamaFactory, &out),
        &mut |_| {},
    )
    .unwrap();
    // 91 records, 4 held out for eval, as the trainer splits them.
    assert_eq!((report.train_records, report.eval_records), (87, 4));
    let plan = finetune_studio::train::plan::plan(&cfg, &model).unwrap();
    assert_eq!(report.planned_steps, plan.total_steps);

    let m = yaml(&out.join("train.yaml"));
    let expect: &[(&str, Value)] = &[
        (
            "model_name_or_path",
            "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
        ),
        ("stage", "sft".into()),
        ("finetuning_type", "lora".into()),
        ("lora_rank", 16u64.into()),
        ("lora_alpha", 32.0.into()),
        ("lora_dropout", 0.05.into()),
        (
            "lora_target",
            "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj".into(),
        ),
        ("use_rslora", false.into()),
        ("dataset", "studio_train".into()),
        ("eval_dataset", "studio_eval".into()),
        ("dataset_dir", "data".into()),
        ("cutoff_len", 256u64.into()),
        ("train_on_prompt", false.into()),
        ("packing", true.into()),
        ("neat_packing", true.into()),
        ("learning_rate", 1e-3.into()),
        ("lr_scheduler_type", "cosine".into()),
        (
            "warmup_steps",
            ((0.05 * plan.total_steps as f64).ceil() as u64).into(),
        ),
        ("num_train_epochs", 5.0.into()),
        ("per_device_train_batch_size", 4u64.into()),
        ("gradient_accumulation_steps", 1u64.into()),
        ("max_grad_norm", 1.0.into()),
        ("seed", 42u64.into()),
        ("eval_strategy", "steps".into()),
        ("eval_steps", 20u64.into()),
        ("save_steps", 20u64.into()),
        ("disable_gradient_checkpointing", true.into()),
        ("bf16", true.into()),
    ];
    for (k, v) in expect {
        assert_eq!(get(&m, k), v, "train.yaml `{k}`");
    }
    // LLaMA-Factory refuses keys its parser does not know.
    let known = known_keys("llamafactory");
    for k in m.keys() {
        let k = k.as_str().unwrap();
        assert!(
            known.contains(k),
            "LLaMA-Factory 0.9.5 has no argument `{k}`"
        );
    }
    assert!(
        m.get("template").is_none(),
        "the tokenizer's own template is used"
    );

    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("data/dataset_info.json")).unwrap())
            .unwrap();
    assert_eq!(info["studio_train"]["file_name"], "train.json");
    assert_eq!(info["studio_eval"]["file_name"], "eval.json");
    assert_eq!(info["studio_train"]["formatting"], "sharegpt");
    let train: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("data/train.json")).unwrap())
            .unwrap();
    let train = train.as_array().unwrap();
    assert_eq!(train.len(), 87);
    let turns = train[0]["conversations"].as_array().unwrap();
    assert_eq!(turns[0]["from"], "human");
    assert_eq!(turns[1]["from"], "gpt");
    let text = std::fs::read_to_string(out.join("data/train.json")).unwrap();
    assert!(!text.contains("{{name}}") && text.contains("Nova"));
    // The eval records are the trainer's eval split, not in the training file.
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("data/eval.json")).unwrap())
            .unwrap();
    for e in eval.as_array().unwrap() {
        assert!(!train.contains(e), "{e} is in both files");
    }

    for f in [
        "launch_single_gpu.sh",
        "launch_multi_gpu.sh",
        "launch_slurm.sbatch",
        "ds_z2.json",
        "README.md",
        "studio-run.toml",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("neat_packing") && readme.contains("87 for training"));
    let multi = std::fs::read_to_string(out.join("launch_multi_gpu.sh")).unwrap();
    assert!(multi.contains("llamafactory-cli train train.yaml deepspeed=ds_z2.json"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("launch_single_gpu.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "the launch script is executable");
    }
    let back = RunConfig::load(&out.join("studio-run.toml")).unwrap();
    assert_eq!(back, cfg);
}

#[test]
fn a_run_becomes_an_axolotl_project_with_the_exact_template() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, model) = identity_run(dir.path());
    cfg.lora.use_rslora = true;
    cfg.data.train_on_prompt = true;
    cfg.training.max_steps = Some(30);
    cfg.training.eval_every = 0;
    cfg.optim.schedule = finetune_studio::train::config::Schedule::Constant;
    cfg.optim.warmup_steps = Some(2);
    let out = dir.path().join("ax");
    let mut req = request(Engine::Axolotl, &out);
    req.cpu = true;
    handoff::export_project(&cfg, &model, &req, &mut |_| {}).unwrap();

    let m = yaml(&out.join("config.yaml"));
    assert_eq!(
        get(&m, "base_model"),
        &Value::from("HuggingFaceTB/SmolLM2-135M-Instruct")
    );
    assert_eq!(get(&m, "chat_template"), &Value::from("jinja"));
    assert_eq!(
        get(&m, "chat_template_jinja").as_str(),
        Some(model.template.source())
    );
    let ds = get(&m, "datasets").as_sequence().unwrap();
    assert_eq!(ds.len(), 1);
    let ds = ds[0].as_mapping().unwrap();
    assert_eq!(get(ds, "path"), &Value::from("data/train.jsonl"));
    assert_eq!(get(ds, "type"), &Value::from("chat_template"));
    assert_eq!(get(ds, "field_messages"), &Value::from("messages"));
    let roles: Vec<&str> = get(ds, "roles_to_train")
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        roles.contains(&"user") && roles.contains(&"assistant"),
        "{roles:?}"
    );
    let test = get(&m, "test_datasets").as_sequence().unwrap()[0]
        .as_mapping()
        .unwrap();
    assert_eq!(get(test, "path"), &Value::from("data/eval.jsonl"));
    for (k, v) in [
        ("adapter", Value::from("lora")),
        ("lora_r", 16u64.into()),
        ("peft_use_rslora", true.into()),
        ("sequence_len", 256u64.into()),
        ("sample_packing", true.into()),
        ("micro_batch_size", 4u64.into()),
        ("max_steps", 30u64.into()),
        ("lr_scheduler", "constant_with_warmup".into()),
        ("warmup_steps", 2u64.into()),
        ("eval_strategy", "no".into()),
        ("train_on_inputs", true.into()),
        ("bf16", false.into()),
        ("fp16", false.into()),
    ] {
        assert_eq!(get(&m, k), &v, "config.yaml `{k}`");
    }
    assert!(
        m.get("num_epochs").is_none(),
        "max_steps decides the length"
    );
    let known = known_keys("axolotl");
    for k in m.keys() {
        let k = k.as_str().unwrap();
        assert!(known.contains(k), "axolotl 0.19 has no config key `{k}`");
    }
    for k in ds.keys().chain(test.keys()) {
        let k = format!("datasets.{}", k.as_str().unwrap());
        assert!(known.contains(&k), "axolotl 0.19 has no dataset key `{k}`");
    }
    let targets = get(&m, "lora_target_modules").as_sequence().unwrap();
    assert_eq!(targets.len(), 7);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("data/train.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 87);
    assert_eq!(lines[0]["messages"][0]["role"], "user");
    assert_eq!(lines[0]["messages"][1]["role"], "assistant");
    let multi = std::fs::read_to_string(out.join("launch_multi_gpu.sh")).unwrap();
    assert!(multi.contains("accelerate launch") && multi.contains("axolotl.cli.train"));
}

#[test]
fn a_folder_of_the_users_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, model) = identity_run(dir.path());
    let out = dir.path().join("mine");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), b"keep me").unwrap();
    let e = handoff::export_project(
        &cfg,
        &model,
        &request(Engine::LlamaFactory, &out),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("mine") && msg.contains("not an earlier hand-off"),
        "{msg}"
    );
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"keep me");

    // An earlier hand-off is replaced whole.
    let out = dir.path().join("again");
    let req = request(Engine::LlamaFactory, &out);
    handoff::export_project(&cfg, &model, &req, &mut |_| {}).unwrap();
    std::fs::write(out.join("stale.txt"), b"x").unwrap();
    handoff::export_project(&cfg, &model, &req, &mut |_| {}).unwrap();
    assert!(!out.join("stale.txt").exists());
    assert!(out.join("train.yaml").is_file());
}

#[test]
fn a_base_the_engine_cannot_load_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, model) = identity_run(dir.path());
    // A local folder without a hub id: its path, with the README saying to change it.
    let out = dir.path().join("local");
    let mut req = request(Engine::LlamaFactory, &out);
    req.base_model = None;
    let r = handoff::export_project(&cfg, &model, &req, &mut |_| {}).unwrap();
    assert!(r.base_model.ends_with("tiny"), "{}", r.base_model);
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("change `model_name_or_path`"), "{readme}");
    // --write-base: the weights travel in base/, and the config points there.
    let out = dir.path().join("with-base");
    let mut req = request(Engine::LlamaFactory, &out);
    req.base_model = None;
    req.write_base = true;
    handoff::export_project(&cfg, &model, &req, &mut |_| {}).unwrap();
    let m = yaml(&out.join("train.yaml"));
    assert_eq!(get(&m, "model_name_or_path"), &Value::from("./base"));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out.join("base").join(f).is_file(), "base/{f} missing");
    }
    // An invalid config is refused before anything is written.
    let mut bad = cfg.clone();
    bad.lora.rank = 0;
    let out = dir.path().join("bad");
    let e = handoff::export_project(&bad, &model, &request(Engine::Axolotl, &out), &mut |_| {})
        .unwrap_err();
    assert!(format!("{e:#}").contains("rank"), "{e:#}");
    assert!(!out.exists());
}

/// An engine's output folder: a tiny adapter, a checkpoint, and the real LLaMA-Factory
/// logs of the fixture.
fn engine_output(dir: &Path, with_project: Option<&RunConfig>) -> PathBuf {
    let project = dir.join("project");
    let output = project.join("output");
    write_tiny_adapter(&output, Architecture::Llama, 4).unwrap();
    write_tiny_adapter(&output.join("checkpoint-20"), Architecture::Llama, 4).unwrap();
    for f in ["trainer_state.json", "trainer_log.jsonl"] {
        std::fs::copy(
            fixture("handoff/llamafactory_output").join(f),
            output.join(f),
        )
        .unwrap();
    }
    if let Some(cfg) = with_project {
        std::fs::write(project.join("studio-run.toml"), cfg.to_toml()).unwrap();
        std::fs::write(project.join("train.yaml"), "stage: sft\n").unwrap();
    }
    output
}

#[test]
fn an_axolotl_output_comes_back_from_its_last_checkpoints_state() {
    // axolotl leaves trainer_state.json only in its checkpoints, and PEFT 0.20 writes
    // `null` for defaulted adapter fields.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RunConfig::default();
    cfg.output.name = "identity".into();
    let project = dir.path().join("project");
    let output = project.join("output");
    write_tiny_adapter(&output, Architecture::Llama, 4).unwrap();
    let acfg = output.join("adapter_config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&acfg).unwrap()).unwrap();
    v["fan_in_fan_out"] = serde_json::Value::Null;
    v["use_dora"] = serde_json::Value::Null;
    std::fs::write(&acfg, v.to_string()).unwrap();
    for step in [3, 6] {
        let ck = output.join(format!("checkpoint-{step}"));
        write_tiny_adapter(&ck, Architecture::Llama, 4).unwrap();
        std::fs::copy(
            fixture("handoff/axolotl_output/trainer_state.json"),
            ck.join("trainer_state.json"),
        )
        .unwrap();
    }
    std::fs::write(project.join("studio-run.toml"), cfg.to_toml()).unwrap();
    std::fs::write(project.join("config.yaml"), "adapter: lora\n").unwrap();
    let r = handoff::import_output(&project, &dir.path().join("runs")).unwrap();
    assert_eq!(r.engine, Some(Engine::Axolotl));
    assert!(r
        .log_source
        .unwrap()
        .ends_with("checkpoint-6/trainer_state.json"));
    assert_eq!(r.checkpoints, [3, 6]);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("handoff/axolotl_output/trainer_state.json")).unwrap(),
    )
    .unwrap();
    let history = state["log_history"].as_array().unwrap();
    let steps = history.iter().filter(|e| e.get("loss").is_some()).count();
    let evals = history
        .iter()
        .filter(|e| e.get("eval_loss").is_some())
        .count();
    assert!(steps > 0 && evals > 0);
    assert_eq!((r.steps, r.evals), (steps, evals));
    let info = finetune_studio::train::runs::read_run(&r.run_dir);
    assert!(info.name.ends_with("identity-axolotl"), "{}", info.name);
    assert_eq!(info.imported.unwrap().engine, "axolotl");
}

#[test]
fn an_engines_output_comes_back_as_a_run_with_its_curves() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RunConfig::default();
    cfg.model.base = "default".into();
    cfg.data.path = fixture("llamafactory_identity.json");
    cfg.output.name = "identity".into();
    let output = engine_output(dir.path(), Some(&cfg));
    let runs = dir.path().join("runs");

    // The project folder is accepted as well as its output/.
    let r = handoff::import_output(output.parent().unwrap(), &runs).unwrap();
    assert_eq!(r.engine, Some(Engine::LlamaFactory));
    assert!(r.restored_config);
    assert_eq!(r.checkpoints, [20]);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("handoff/llamafactory_output/trainer_state.json"))
            .unwrap()
            .replace("NaN", "null"),
    )
    .unwrap();
    let history = state["log_history"].as_array().unwrap();
    let logged = history.iter().filter(|e| e.get("loss").is_some()).count();
    let evals = history
        .iter()
        .filter(|e| e.get("eval_loss").is_some())
        .count();
    assert!(logged > 0);
    assert_eq!((r.steps, r.evals), (logged, evals));

    let info = finetune_studio::train::runs::read_run(&r.run_dir);
    assert!(
        info.name.ends_with("identity-llamafactory"),
        "{}",
        info.name
    );
    assert!(info.has_adapter);
    assert_eq!(info.checkpoints, [20]);
    assert_eq!(info.steps.len(), logged);
    assert_eq!(info.evals.len(), evals);
    assert_eq!(
        info.config.as_ref().map(|c| c.model.base.as_str()),
        Some("default")
    );
    let first = history.iter().find(|e| e.get("loss").is_some()).unwrap();
    assert_eq!(info.steps[0].loss, first["loss"].as_f64().unwrap());
    assert_eq!(info.steps[0].step as u64, first["step"].as_u64().unwrap());
    let imported = info.imported.as_ref().unwrap();
    assert_eq!(imported.engine, "LLaMA-Factory");
    assert!(imported.train_runtime_s.is_some_and(|s| s > 0.0));
    // Listed beside local runs.
    let listed = finetune_studio::train::list_runs(&runs);
    assert_eq!(listed.len(), 1);

    // It is resumed in the engine, not here.
    let e = finetune_studio::train::resume(&r.run_dir, None, finetune_studio::jobs::Waker::noop())
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("LLaMA-Factory"), "{e:#}");
}

#[test]
fn an_output_without_a_project_takes_its_settings_from_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let output = engine_output(dir.path(), None);
    std::fs::remove_file(output.join("trainer_state.json")).unwrap();
    let r = handoff::import_output(&output, &dir.path().join("runs")).unwrap();
    assert!(!r.restored_config);
    // The curves come from trainer_log.jsonl then.
    assert!(r.log_source.unwrap().ends_with("trainer_log.jsonl"));
    assert!(r.steps > 0);
    let info = finetune_studio::train::runs::read_run(&r.run_dir);
    let adapter: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(output.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        info.config.unwrap().lora.rank as u64,
        adapter["r"].as_u64().unwrap()
    );
}

#[test]
fn a_folder_without_a_usable_adapter_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let empty = dir.path().join("nothing-here");
    std::fs::create_dir_all(&empty).unwrap();
    let e = handoff::import_output(&empty, &runs).unwrap_err();
    assert!(format!("{e:#}").contains("nothing-here") && format!("{e:#}").contains("adapter"));

    // A header that claims more than the file holds.
    let output = engine_output(dir.path(), None);
    let st = output.join("adapter_model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&st, bytes).unwrap();
    let e = handoff::import_output(&output, &runs).unwrap_err();
    assert!(
        format!("{e:#}").contains("adapter_model.safetensors"),
        "{e:#}"
    );
    // Nothing half-imported is left in the runs folder.
    assert!(finetune_studio::train::list_runs(&runs).is_empty());
}
