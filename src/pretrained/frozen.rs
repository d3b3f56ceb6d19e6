//! The frozen matmul: x Wᵀ for a frozen weight W, as a candle custom op
//! whose backward returns only the input's gradient dy·W. candle's own
//! matmul backward computes the gradient of *both* operands, so a frozen
//! W would cost a second matmul of the forward's size per layer and a
//! weight-sized buffer.
//!
//! On the CPU, a product with few rows (decoding: one row per sequence)
//! runs on [`crate::matmul::few_rows`] instead of gemm, which would repack the whole
//! weight matrix for a handful of rows at every step.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

/// x Wᵀ for x [.., in] and a frozen W [out, in], whose backward computes
/// only the input's gradient (module docs).
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() || x.device().is_cuda() {
        x.contiguous()?
            .apply_op1(FrozenLinear { w: w.contiguous()? })
    } else {
        x.broadcast_matmul(&w.t()?)
    }
}

struct FrozenLinear {
    w: Tensor,
}

impl FrozenLinear {
    /// (M, out, in) and the layout of Wᵀ as a [in, out] view of W.
    fn geometry(&self, x: &Layout) -> candle_core::Result<(usize, usize, usize, Layout)> {
        let (out, inn) = self.w.dims2()?;
        let dims = x.dims();
        if dims.last() != Some(&inn) || !x.is_contiguous() {
            candle_core::bail!(
                "frozen linear: input {:?} (contiguous: {}) does not end in {inn}",
                dims,
                x.is_contiguous()
            );
        }
        let m = x.shape().elem_count() / inn;
        let (_, wl) = self.w.storage_and_layout();
        let wt = Layout::new(Shape::from((inn, out)), vec![1, inn], wl.start_offset());
        Ok((m, out, inn, wt))
    }

    fn out_shape(x: &Layout, out: usize) -> Shape {
        let mut dims = x.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = out;
        }
        Shape::from(dims)
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, out, inn, wt) = self.geometry(l)?;
        let (ws, _) = self.w.storage_and_layout();
        let Storage::Cpu(ws) = &*ws else {
            candle_core::bail!("frozen linear: input on the CPU, weight elsewhere");
        };
        if let (CpuStorage::F32(xs), CpuStorage::F32(w)) = (x, ws)
            && m <= FEW_ROWS
        {
            let xs = &xs[l.start_offset()..l.start_offset() + m * inn];
            let w = &w[wt.start_offset()..wt.start_offset() + out * inn];
            return Ok((
                CpuStorage::F32(crate::matmul::few_rows(xs, w, inn)),
                Self::out_shape(l, out),
            ));
        }
        let xl = Layout::new(Shape::from((m, inn)), vec![inn, 1], l.start_offset());
        let y = x.matmul(ws, (1, m, out, inn), &xl, &wt)?;
        Ok((y, Self::out_shape(l, out)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (m, out, inn, wt) = self.geometry(l)?;
        let (ws, _) = self.w.storage_and_layout();
        let Storage::Cuda(ws) = &*ws else {
            candle_core::bail!("frozen linear: input on the GPU, weight elsewhere");
        };
        let xl = Layout::new(Shape::from((m, inn)), vec![inn, 1], l.start_offset());
        let y = x.matmul(ws, (1, m, out, inn), &xl, &wt)?;
        Ok((y, Self::out_shape(l, out)))
    }

    /// dx = dy · W; W gets no gradient.
    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(dy.broadcast_matmul(&self.w)?))
    }
}

/// Up to this many rows, [`crate::matmul::few_rows`] beats gemm: decoding multiplies a
/// handful of rows by every weight, and gemm would repack the whole weight
/// matrix for them at every step.
const FEW_ROWS: usize = 32;
