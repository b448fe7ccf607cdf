//! Which instruction set the quantized kernels run on: read once from CPUID at run time
//! (the crate is built for baseline x86-64, so one binary serves every CPU), with
//! `FINETUNE_STUDIO_ISA=scalar|avx2|avx512` to pin a lower level for comparisons.

use std::sync::OnceLock;

/// The kernel families, from slowest to fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, any CPU.
    Scalar,
    /// AVX2 + FMA + F16C: 256-bit integer dot products (`vpmaddubsw`).
    Avx2,
    /// AVX-512 F/BW/VL with VNNI: 512-bit `vpdpbusd`, two blocks per instruction.
    Avx512Vnni,
}

impl Isa {
    /// What the status bar says, e.g. "AVX-512 VNNI".
    pub fn label(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "AVX2",
            Isa::Avx512Vnni => "AVX-512 VNNI",
        }
    }

    /// Every level this CPU can run, lowest first (the tests check each against the
    /// scalar reference).
    pub fn available() -> Vec<Isa> {
        let best = detected();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni]
            .into_iter()
            .filter(|&i| i <= best)
            .collect()
    }
}

/// The best level the CPU has, read once.
pub fn detected() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni")
            {
                return Isa::Avx512Vnni;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    })
}

/// The level the kernels use: the detected one, or a lower one the environment asks for.
pub fn active() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let best = detected();
        let asked = match std::env::var("FINETUNE_STUDIO_ISA").ok().as_deref() {
            Some("scalar") => Some(Isa::Scalar),
            Some("avx2") => Some(Isa::Avx2),
            Some("avx512") => Some(Isa::Avx512Vnni),
            _ => None,
        };
        match asked {
            Some(a) if a <= best => a,
            Some(a) => {
                tracing::warn!(
                    "FINETUNE_STUDIO_ISA asks for {}, which this CPU lacks; using {}",
                    a.label(),
                    best.label()
                );
                best
            }
            None => best,
        }
    })
}
