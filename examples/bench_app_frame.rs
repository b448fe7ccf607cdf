//! Frame time of the studio window while a run trains with a 50K-row dataset open: the
//! real `StudioApp` in an egui_kittest harness (no GPU; the time is egui's pass, i.e. our
//! `logic()` + `ui()` plus egui's layout, without tessellation or painting), the Datasets
//! tab scrolling its table every frame, then the Train tab with live plots.
//!
//!   cargo run --release --example bench_app_frame [ROWS] [FRAMES]
//!
//! `BENCH_MODEL=/path/or/default` trains that model instead of a tiny random one.

use std::path::Path;
use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use finetune_studio::app::{AppOptions, StudioApp, Tab};

fn write_dataset(path: &Path, rows: usize) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..rows {
        let words = 8 + (i * 7919) % 120;
        let output: String = (0..words)
            .map(|w| format!("word{} ", (i + w) % 997))
            .collect();
        let rec = serde_json::json!({
            "instruction": format!("Question number {i}: explain topic {}", i % 1000),
            "input": if i % 3 == 0 { format!("context {i}") } else { String::new() },
            "output": output,
        });
        writeln!(f, "{rec}")?;
    }
    f.flush()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn run_frames(h: &mut Harness<'static, StudioApp>, frames: usize, scroll: bool) -> Vec<Duration> {
    let mut walls = Vec::with_capacity(frames);
    for i in 0..frames {
        if scroll {
            h.hover_at(egui::pos2(400.0, 350.0));
            let dy = if (i / 100) % 2 == 0 { -120.0 } else { 120.0 };
            h.event(egui::Event::MouseWheel {
                unit: egui::MouseWheelUnit::Point,
                delta: egui::vec2(0.0, dy),
                phase: egui::TouchPhase::Move,
                source: egui::MouseWheelSource::Unknown,
                modifiers: egui::Modifiers::NONE,
            });
        }
        let t = Instant::now();
        h.step();
        walls.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(16));
    }
    walls
}

fn report(name: &str, h: &mut Harness<'static, StudioApp>, walls: &mut [Duration]) {
    let ft = &h.state().frame_times;
    let (p50, p99) = (ft.percentile(50.0), ft.percentile(99.0));
    println!(
        "{name}: {} frames · app logic+ui p50 {:.2} ms p99 {:.2} ms · whole egui pass p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        walls.len(),
        p50.unwrap_or_default().as_secs_f64() * 1e3,
        p99.unwrap_or_default().as_secs_f64() * 1e3,
        pct(walls, 50.0).as_secs_f64() * 1e3,
        pct(walls, 99.0).as_secs_f64() * 1e3,
        walls.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    h.state_mut().frame_times.clear();
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let frames: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(600);
    let tmp = tempfile::tempdir()?;
    std::env::set_var("FINETUNE_STUDIO_HOME", tmp.path().join("home"));
    let data = tmp.path().join("bench.jsonl");
    write_dataset(&data, rows)?;
    let model = match std::env::var("BENCH_MODEL") {
        Ok(m) => m,
        Err(_) => finetune_studio::testkit::write_tiny_model(
            &tmp.path().join("tiny"),
            finetune_studio::model::Architecture::Llama,
            1,
        )?
        .display()
        .to_string(),
    };

    let mut h = Harness::builder()
        .with_size([1280.0, 800.0])
        .allow_missing_glyphs()
        .build_eframe(|cc| StudioApp::with_options(cc, AppOptions::headless()));
    h.state_mut().open_dataset(&data, 0.0);
    let t = Instant::now();
    while h
        .state()
        .datasets
        .doc
        .as_ref()
        .is_none_or(|d| d.current_analysis().is_none())
    {
        h.step();
        std::thread::sleep(Duration::from_millis(10));
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(300),
            "the dataset did not load"
        );
    }
    println!(
        "{rows} rows loaded and analyzed in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    h.state_mut().frame_times.clear();
    let mut w = run_frames(&mut h, frames, true);
    report("Datasets tab, scrolling, idle", &mut h, &mut w);

    {
        let cfg = &mut h.state_mut().state.run_config;
        cfg.model.base = model.clone();
        cfg.data.max_seq_len = 128;
        cfg.training.batch_size = 2;
        cfg.training.max_steps = Some(1_000_000);
        cfg.training.eval_every = 0;
        cfg.training.save_every = 0;
        cfg.output.name = "bench".into();
    }
    h.state_mut().state.tab = Tab::Train;
    h.run_steps(3);
    h.get_by_label("▶ Start training").click();
    let t = Instant::now();
    while h
        .state()
        .train
        .run
        .as_ref()
        .is_none_or(|r| r.curves.steps.len() < 2)
    {
        h.step();
        std::thread::sleep(Duration::from_millis(10));
        anyhow::ensure!(
            h.state().train.is_running(),
            "the run ended: {:?}",
            h.state().notices.items()
        );
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "no step within 10 minutes"
        );
    }
    println!(
        "first steps after {:.1} s ({model})",
        t.elapsed().as_secs_f64()
    );
    h.state_mut().frame_times.clear();
    let mut w = run_frames(&mut h, frames, false);
    let steps = h
        .state()
        .train
        .run
        .as_ref()
        .map_or(0, |r| r.curves.steps.len());
    report(
        &format!("Train tab, training ({steps} steps logged)"),
        &mut h,
        &mut w,
    );

    h.state_mut().state.tab = Tab::Datasets;
    h.run_steps(2);
    h.state_mut().frame_times.clear();
    let mut w = run_frames(&mut h, frames, true);
    report("Datasets tab, scrolling, while training", &mut h, &mut w);
    h.state_mut().train.stop();
    Ok(())
}
