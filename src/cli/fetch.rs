//! `finetune-studio fetch-model`: gets the default model.

pub fn run() -> anyhow::Result<i32> {
    let found = crate::hub::fetch::fetch_default(&mut |line| eprintln!("{line}"))?;
    println!("{}", found.location.path().display());
    Ok(0)
}
