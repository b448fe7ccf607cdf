//! The status bar: the loaded model and the path its products take (how its weights are
//! stored, which instruction set the kernels run on), the memory this process uses (VmRSS,
//! from the window's `MemoryGauge`) and the job running now.

use eframe::egui;

use super::busy::Busy;
use super::model_slot::ModelSlot;

/// The status bar (it keeps no state of its own).
#[derive(Debug, Default)]
pub struct StatusBar;

impl StatusBar {
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        model: &ModelSlot,
        job: Option<String>,
        rss: Option<u64>,
    ) {
        ui.horizontal(|ui| {
            if model.is_loading() {
                ui.add(Busy);
            }
            let line = model.status_line();
            let r = ui.add(egui::Label::new(&line).truncate());
            if let ModelSlot::Ready { summary, .. } = model {
                r.on_hover_text(summary);
            } else if let ModelSlot::Failed { error, .. } = model {
                r.on_hover_text(error);
            }
            if let ModelSlot::Ready { model, .. } = model {
                ui.separator();
                ui.label(kernel_path(&model.storage_label())).on_hover_text(
                    "How the weights are kept and what multiplies them: quantized blocks go \
                         through integer dot products on this instruction set (chosen from CPUID; \
                         FINETUNE_STUDIO_ISA=avx2|scalar pins a lower one), an f32 copy \
                         (--precision f32) through gemm",
                );
            }
            ui.separator();
            match rss {
                Some(b) => ui.label(format!("memory {:.0} MiB", crate::sys::mib(b))),
                None => ui.weak("memory: unknown"),
            }
            .on_hover_text("Resident memory of this process (VmRSS)");
            if let Some(job) = job {
                ui.separator();
                ui.add(Busy);
                ui.add(egui::Label::new(job).truncate());
            }
        });
        // Keep the memory figure fresh even when nothing else repaints.
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_secs(1));
    }
}

/// "Q4_1 + Q8_0 · AVX-512 VNNI" (stored blocks and 16-bit rows run on the CPU's kernels),
/// or "F32 · gemm" for an f32 copy, which the kernels of `ops::quant` do not see.
fn kernel_path(storage: &str) -> String {
    let quantized = storage.split(" + ").any(|t| !matches!(t, "F32" | ""));
    let path = if quantized {
        crate::ops::quant::isa::active().label()
    } else {
        "gemm"
    };
    format!("{storage} · {path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_path_names_the_storage_and_what_multiplies_it() {
        assert_eq!(kernel_path("F32"), "F32 · gemm");
        assert!(!kernel_path("F16 + F32").ends_with("gemm"));
        let q = kernel_path("Q4_1 + Q8_0");
        assert!(q.starts_with("Q4_1 + Q8_0 · "));
        assert!(q.ends_with(crate::ops::quant::isa::active().label()), "{q}");
    }
}
