//! A matmul with a frozen weight for training: `y = x Wᵀ` whose backward returns only
//! `dx = dy W`. candle's autograd computes the gradient of both matmul operands even when
//! one is a plain tensor (PERF.md: +50 % FLOPs and a weight-sized gradient per layer), and
//! no crate offers a frozen-operand matmul, so this small custom op does it.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Storage, Tensor};

/// `x [n, in] -> x Wᵀ [n, out]` with `W [out, in]` frozen.
pub struct FrozenMatmul {
    pub weight: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let data = storage.as_slice::<f32>()?;
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("frozen-matmul: input must be contiguous".into())
        })?;
        let x = Tensor::from_slice(&data[start..end], layout.shape(), &Device::Cpu)?;
        let y = x.matmul(&self.weight.t()?)?;
        let shape = y.shape().clone();
        let (guard, y_layout) = y.storage_and_layout();
        let out = match &*guard {
            Storage::Cpu(cpu) => match y_layout.contiguous_offsets() {
                Some((0, n)) if n == shape.elem_count() => cpu.clone(),
                _ => candle_core::bail!("frozen-matmul: unexpected output layout"),
            },
            _ => candle_core::bail!("frozen-matmul: only the CPU is supported"),
        };
        Ok((out, shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.weight)?))
    }
}

/// `x Wᵀ` that autograd differentiates with respect to `x` only.
pub fn frozen_matmul(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(FrozenMatmul {
        weight: weight.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn gradient_matches_autograd_matmul() {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev).unwrap();
        let x = Var::new(&[[0.5f32, -1.0, 2.0], [1.5, 0.25, -0.5]], &dev).unwrap();
        let y1 = frozen_matmul(x.as_tensor(), &w).unwrap();
        let y2 = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        assert_eq!(y1.to_vec2::<f32>().unwrap(), y2.to_vec2::<f32>().unwrap());
        let g1 = (y1.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
        let g2 = (y2.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
        let a = g1.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        let b = g2.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
    }
}
