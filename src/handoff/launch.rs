//! The launch files of a hand-off: one GPU, several GPUs on one or more nodes (torchrun for
//! LLaMA-Factory, accelerate for axolotl, both with DeepSpeed ZeRO-2), and a Slurm batch
//! script that starts the multi-GPU launcher once per node.

use std::path::Path;

use super::Engine;

pub const SINGLE_GPU: &str = "launch_single_gpu.sh";
pub const MULTI_GPU: &str = "launch_multi_gpu.sh";
pub const SLURM: &str = "launch_slurm.sbatch";
pub const DEEPSPEED_Z2: &str = "ds_z2.json";

/// DeepSpeed ZeRO stage 2 with every size left to the Trainer (`auto`): optimizer state
/// and gradients sharded over the GPUs, the LoRA weights replicated.
pub fn deepspeed_zero2() -> serde_json::Value {
    serde_json::json!({
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": true,
        "fp16": {
            "enabled": "auto",
            "loss_scale": 0,
            "loss_scale_window": 1000,
            "initial_scale_power": 16,
            "hysteresis": 2,
            "min_loss_scale": 1
        },
        "bf16": {"enabled": "auto"},
        "zero_optimization": {
            "stage": 2,
            "allgather_partitions": true,
            "allgather_bucket_size": 5e8,
            "overlap_comm": false,
            "reduce_scatter": true,
            "reduce_bucket_size": 5e8,
            "contiguous_gradients": true,
            "round_robin_gradients": true
        }
    })
}

/// The command that trains the project on one GPU, run in its folder.
pub fn single_gpu_command(engine: Engine) -> String {
    match engine {
        Engine::LlamaFactory => "llamafactory-cli train train.yaml".into(),
        Engine::Axolotl => "axolotl train config.yaml".into(),
    }
}

fn single_gpu(engine: Engine) -> String {
    format!(
        "#!/usr/bin/env bash\n\
         # Trains this project on one GPU (or the CPU, for a config written with --cpu).\n\
         set -euo pipefail\n\
         cd \"$(dirname \"$0\")\"\n{}{} \"$@\"\n",
        match engine {
            Engine::LlamaFactory => "",
            Engine::Axolotl => "export AXOLOTL_DO_NOT_TRACK=1\n",
        },
        single_gpu_command(engine)
    )
}

fn multi_gpu(engine: Engine) -> String {
    let head = "#!/usr/bin/env bash\n\
        # Trains this project on every GPU of this node, or of several nodes: run it once per\n\
        # node with NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT set (launch_slurm.sbatch\n\
        # does). DeepSpeed ZeRO-2 (ds_z2.json) shards optimizer state and gradients.\n\
        set -euo pipefail\n\
        cd \"$(dirname \"$0\")\"\n\
        NNODES=${NNODES:-1}\n\
        NODE_RANK=${NODE_RANK:-0}\n\
        MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}\n\
        MASTER_PORT=${MASTER_PORT:-29500}\n\
        NPROC_PER_NODE=${NPROC_PER_NODE:-$(nvidia-smi -L 2>/dev/null | wc -l)}\n\
        if [ \"$NPROC_PER_NODE\" -lt 1 ]; then\n  \
          echo \"no GPU found; set NPROC_PER_NODE\" >&2\n  \
          exit 1\n\
        fi\n";
    let run = match engine {
        Engine::LlamaFactory => format!(
            "FORCE_TORCHRUN=1 NNODES=$NNODES NODE_RANK=$NODE_RANK NPROC_PER_NODE=$NPROC_PER_NODE \\\n  \
             MASTER_ADDR=$MASTER_ADDR MASTER_PORT=$MASTER_PORT \\\n  \
             llamafactory-cli train train.yaml deepspeed={DEEPSPEED_Z2} \"$@\"\n"
        ),
        Engine::Axolotl => format!(
            "export AXOLOTL_DO_NOT_TRACK=1\n\
             accelerate launch --num_machines \"$NNODES\" --machine_rank \"$NODE_RANK\" \\\n  \
             --num_processes $((NNODES * NPROC_PER_NODE)) \\\n  \
             --main_process_ip \"$MASTER_ADDR\" --main_process_port \"$MASTER_PORT\" \\\n  \
             -m axolotl.cli.train config.yaml --deepspeed {DEEPSPEED_Z2} \"$@\"\n"
        ),
    };
    format!("{head}{run}")
}

fn slurm(engine: Engine) -> String {
    format!(
        "#!/usr/bin/env bash\n\
         #SBATCH --job-name=finetune-studio-{}\n\
         #SBATCH --nodes=2\n\
         #SBATCH --ntasks-per-node=1\n\
         #SBATCH --gpus-per-node=8\n\
         #SBATCH --cpus-per-task=32\n\
         #SBATCH --time=24:00:00\n\
         #SBATCH --output=slurm-%j.out\n\
         # Submit from this folder: sbatch launch_slurm.sbatch (change the node and GPU\n\
         # counts above to your allocation). One task per node runs launch_multi_gpu.sh.\n\
         set -euo pipefail\n\
         export NNODES=$SLURM_NNODES\n\
         export NPROC_PER_NODE=${{SLURM_GPUS_PER_NODE:-8}}\n\
         export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\n\
         export MASTER_PORT=${{MASTER_PORT:-29500}}\n\
         srun --kill-on-bad-exit=1 bash -c 'NODE_RANK=$SLURM_NODEID ./{MULTI_GPU}'\n",
        engine.id()
    )
}

/// Writes the launch files into the project folder `dir`.
pub fn write(dir: &Path, engine: Engine) -> anyhow::Result<()> {
    let ds = serde_json::to_string_pretty(&deepspeed_zero2())?;
    crate::fsio::write_bytes_atomic(&dir.join(DEEPSPEED_Z2), ds.as_bytes())?;
    for (name, text) in [
        (SINGLE_GPU, single_gpu(engine)),
        (MULTI_GPU, multi_gpu(engine)),
        (SLURM, slurm(engine)),
    ] {
        let path = dir.join(name);
        crate::fsio::write_bytes_atomic(&path, text.as_bytes())?;
        make_executable(&path)?;
    }
    Ok(())
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_pass_the_cluster_variables_through() {
        let lf = multi_gpu(Engine::LlamaFactory);
        for v in [
            "FORCE_TORCHRUN=1",
            "NNODES=$NNODES",
            "NODE_RANK=$NODE_RANK",
            "MASTER_ADDR=$MASTER_ADDR",
            "deepspeed=ds_z2.json",
        ] {
            assert!(lf.contains(v), "{v} missing from\n{lf}");
        }
        let ax = multi_gpu(Engine::Axolotl);
        assert!(ax.contains("accelerate launch") && ax.contains("--deepspeed ds_z2.json"));
        let s = slurm(Engine::Axolotl);
        assert!(s.contains("#SBATCH --nodes=") && s.contains("NODE_RANK=$SLURM_NODEID"));
        assert_eq!(deepspeed_zero2()["zero_optimization"]["stage"], 2);
    }
}
