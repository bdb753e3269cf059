//! The device side of [`super`]: autotune's candidate kernels, launched one by one through
//! cubek on burn's cubecl backend.

use std::panic::{catch_unwind, AssertUnwindSafe};

use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeRuntime, FloatElement};
use cubek::matmul::components::tile::TileMatmulKind;
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::{launch_ref, Strategy};
use cubek::matmul::routines::double_buffering::DoubleBufferingArgs;
use cubek::matmul::routines::double_unit::DoubleUnitSelectionArgs;
use cubek::matmul::routines::ordered_double_buffering::OrderedSelectionArgs;
use cubek::matmul::routines::simple::SimpleArgs;
use cubek::matmul::routines::simple_unit::SimpleUnitSelectionArgs;
use cubek::matmul::routines::{BlueprintStrategy, Routine, TileSizeSelection};
use cubek::std::InputBinding;
use rayon::prelude::*;

use super::{judge, operands, Outcome, Product, Verdict};
use crate::cube::Cube;

type Backend<R, F> = Cube<R, F, i32, u32>;

/// The kernels burn-cubecl 0.21's matmul autotune times, in its order (the first is its
/// fallback): the naive kernel; four matrix–vector kernels; the simple and double-buffered
/// unit kernels with the largest and smallest tiles; the accelerated (tensor-core: `cmma`,
/// `mma`) kernels, simple, ordered, double-buffered, specialised and TMA ones.
pub fn candidates() -> Vec<Strategy> {
    let mut all = vec![
        Strategy::Naive,
        Strategy::DoubleVecMat(BlueprintStrategy::Inferred(().into())),
        Strategy::SimpleVecMat(BlueprintStrategy::Inferred(().into())),
        Strategy::GemvPlaneParallel(BlueprintStrategy::Inferred(Default::default())),
        Strategy::GemvUnitPerpendicular(BlueprintStrategy::Inferred(Default::default())),
    ];
    for tile_size in [
        TileSizeSelection::MaxTileSize,
        TileSizeSelection::MinTileSize,
    ] {
        all.push(Strategy::SimpleUnit(BlueprintStrategy::Inferred(
            SimpleUnitSelectionArgs { tile_size },
        )));
        all.push(Strategy::DoubleUnit(BlueprintStrategy::Inferred(
            DoubleUnitSelectionArgs { tile_size },
        )));
    }
    all.extend(accelerated());
    all
}

/// `Inferred(args)` for whichever routine the variant it goes into wants.
fn inferred<A: Routine<()>>(args: A::Strategy) -> BlueprintStrategy<(), A> {
    BlueprintStrategy::Inferred(args)
}

/// The tensor-core kernels, each with cubek's `cmma` tiles and then its `mma` tiles, in
/// autotune's order (its cache stores a choice as an index into the whole list).
fn accelerated() -> Vec<Strategy> {
    use Strategy::*;
    use TileMatmulKind::{Cmma, Mma};
    let simple = |multi_rows, tile_matmul| SimpleArgs {
        multi_rows,
        tile_matmul,
    };
    let ordered = |row_count, tile_matmul| OrderedSelectionArgs {
        partition_k: Some(2),
        row_count: Some(row_count),
        rows_per_plane: Some(2),
        tile_matmul,
    };
    let double = |specialized, tile_matmul| DoubleBufferingArgs {
        specialized,
        tile_matmul,
    };
    let mut all = Vec::new();
    for multi_rows in [false, true] {
        all.push(SimpleCyclicCmma(inferred(simple(multi_rows, Cmma))));
        all.push(SimpleCyclicMma(inferred(simple(multi_rows, Mma))));
    }
    for row_count in [4, 8] {
        all.push(OrderedDoubleCmma(inferred(ordered(row_count, Cmma))));
        all.push(OrderedDoubleMma(inferred(ordered(row_count, Mma))));
    }
    for specialized in [false, true] {
        all.push(DoubleCyclicCmma(inferred(double(specialized, Cmma))));
        all.push(DoubleCyclicMma(inferred(double(specialized, Mma))));
    }
    all.push(SpecializedCyclicCmma(inferred(().into())));
    all.push(SpecializedCyclicMma(inferred(().into())));
    for multi_rows in [false, true] {
        all.push(SimpleTmaCmma(inferred(simple(multi_rows, Cmma))));
        all.push(SimpleTmaMma(inferred(simple(multi_rows, Mma))));
    }
    all.push(SpecializedTmaCmma(inferred(().into())));
    all.push(SpecializedTmaMma(inferred(().into())));
    all
}

/// The two sides of a product on the device, and the f64 reference computed from the values
/// the device holds (after their rounding to `F`).
struct Inputs<R: CubeRuntime> {
    lhs: CubeTensor<R>,
    rhs: CubeTensor<R>,
    /// `batch × m × n`, row-major.
    want: Vec<f64>,
    /// Σ|aᵢ||bᵢ| of each element's dot product.
    terms: Vec<f64>,
}

/// A `batch × rows × cols` tensor on the device holding `stored`; `transposed`: stored as
/// `batch × cols × rows` and viewed through swapped strides.
fn side<R: CubeRuntime, F: FloatElement>(
    device: &R::Device,
    [batch, rows, cols]: [usize; 3],
    transposed: bool,
    stored: Vec<f32>,
) -> (CubeTensor<R>, Vec<f64>) {
    let shape = if transposed {
        [batch, cols, rows]
    } else {
        [batch, rows, cols]
    };
    let data = TensorData::new(stored, shape).convert::<F>();
    let mut t = Tensor::<Backend<R, F>, 3>::from_data(data, device);
    if transposed {
        t = t.swap_dims(1, 2);
    }
    let held = t
        .clone()
        .into_data()
        .convert::<f64>()
        .to_vec()
        .expect("f64");
    (t.into_primitive().tensor(), held)
}

fn inputs<R: CubeRuntime, F: FloatElement>(device: &R::Device, p: Product, seed: u64) -> Inputs<R> {
    let (a, b) = operands(p, seed);
    let (lhs, a) = side::<R, F>(device, [p.batch, p.m, p.k], p.lhs_transposed, a);
    let (rhs, b) = side::<R, F>(device, [p.batch, p.k, p.n], p.rhs_transposed, b);
    // One row of the output per task: the largest products have 10⁵ rows.
    let mut want = vec![0.0; p.batch * p.m * p.n];
    let mut terms = vec![0.0; want.len()];
    want.par_chunks_mut(p.n)
        .zip(terms.par_chunks_mut(p.n))
        .enumerate()
        .for_each(|(row, (want, terms))| {
            let (batch, i) = (row / p.m, row % p.m);
            let a = &a[(batch * p.m + i) * p.k..][..p.k];
            let b = &b[batch * p.k * p.n..][..p.k * p.n];
            for (l, &a) in a.iter().enumerate() {
                for ((w, t), &b) in want
                    .iter_mut()
                    .zip(terms.iter_mut())
                    .zip(&b[l * p.n..][..p.n])
                {
                    *w += a * b;
                    *t += (a * b).abs();
                }
            }
        });
    Inputs {
        lhs,
        rhs,
        want,
        terms,
    }
}

/// Runs `strategy` on the inputs of product `p`; the output as f32, or why it could not run.
fn launch<R: CubeRuntime, F: FloatElement>(
    device: &R::Device,
    p: Product,
    inputs: &Inputs<R>,
    strategy: &Strategy,
) -> Result<Vec<f32>, String> {
    let dtype = F::dtype();
    let nan = Tensor::<Backend<R, F>, 3>::full([p.batch, p.m, p.n], f32::NAN, device);
    let out: CubeTensor<R> = nan.into_primitive().tensor();
    let client = out.client.clone();
    let run = || {
        let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems {
            lhs: dtype.into(),
            rhs: dtype.into(),
            out: dtype.into(),
        });
        launch_ref(
            strategy,
            &client,
            InputBinding::new(inputs.lhs.clone().binding(), dtype.into()),
            InputBinding::new(inputs.rhs.clone().binding(), dtype.into()),
            out.clone().binding(),
            &mut dtypes,
        )
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("{e:?}")),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(format!("panicked: {why}"));
        }
    }
    let got = Tensor::<Backend<R, F>, 3>::from_primitive(TensorPrimitive::Float(out));
    Ok(got.into_data().convert::<f32>().to_vec().expect("f32"))
}

/// Every candidate of [`candidates`] on product `p` in precision `F` (inputs, output and
/// the stored result in `F`; the kernels sum in f32), against the f64 reference of the same
/// rounded inputs. `limit` is the largest error taken as right: rounding gives about 2⁻²⁴ in
/// f32 and 2⁻⁹ in bf16 (the stored result), TF32 tensor cores about 2⁻¹¹, a wrong kernel
/// errors of order 1.
pub fn check<R: CubeRuntime, F: FloatElement>(
    device: &R::Device,
    p: Product,
    seed: u64,
    limit: f64,
) -> Vec<Outcome> {
    let inputs = inputs::<R, F>(device, p, seed);
    candidates()
        .iter()
        .map(|strategy| Outcome {
            kernel: strategy.to_string(),
            verdict: match launch::<R, F>(device, p, &inputs, strategy) {
                Ok(got) => judge(&got, &inputs.want, &inputs.terms, limit),
                Err(why) => Verdict::Refused(why),
            },
        })
        .collect()
}

/// What the candidate named `kernel` (its name in autotune's list) gives for product `p` on
/// the inputs of [`check`] for `seed`: the whole output, row-major, NaN where it wrote nothing;
/// or why it did not run.
pub fn output<R: CubeRuntime, F: FloatElement>(
    device: &R::Device,
    p: Product,
    seed: u64,
    kernel: &str,
) -> Result<Vec<f32>, String> {
    let strategy = candidates()
        .into_iter()
        .find(|s| s.to_string() == kernel)
        .ok_or_else(|| format!("{kernel} is not among autotune's candidates"))?;
    launch::<R, F>(device, p, &inputs::<R, F>(device, p, seed), &strategy)
}

/// [`check`] on the first CUDA device, in f32 or (`bf16`) bf16.
#[cfg(feature = "cuda")]
pub fn check_cuda(p: Product, bf16: bool, seed: u64, limit: f64) -> Vec<Outcome> {
    use cubecl::cuda::CudaRuntime;
    let device = Default::default();
    if bf16 {
        check::<CudaRuntime, burn::tensor::bf16>(&device, p, seed, limit)
    } else {
        check::<CudaRuntime, f32>(&device, p, seed, limit)
    }
}

/// [`check`] on the first device of burn's wgpu backend, in f32 (wgpu has no bf16).
#[cfg(feature = "wgpu")]
pub fn check_wgpu(p: Product, seed: u64, limit: f64) -> Vec<Outcome> {
    use burn::backend::wgpu::WgpuRuntime;
    check::<WgpuRuntime, f32>(&Default::default(), p, seed, limit)
}
