//! birads' own depthwise backward and its weight-gradient kernel against burn's backward on
//! the CPU.

use super::*;

#[test]
fn depthwise_gradients_on_cubecl_equal_burns_cpu_backward() {
    let _serial = serial();
    let device = Default::default();
    <CpuTrain as Backend>::seed(&device, 3);
    for case in DEPTHWISE_CASES {
        let (n, c, h, w, k, p, chunk) = case;
        let want = depthwise_reference(case);
        let (x, weight, r) = (on_gpu(want.x), on_gpu(want.weight), on_gpu(want.r));
        let got_x = values(input_gradient::<G>(r.clone(), weight, p));
        let got_w = values(weight_gradient_in_chunks::<G>(x, r, k, p, chunk));
        let case = format!("{n}×{c}×{h}×{w}, k {k}, p {p}, chunk {chunk}");
        let (dx, dw) = (
            relative(&got_x, &want.grad_x),
            relative(&got_w, &want.grad_w),
        );
        assert!(dx < 1e-5, "∂x {case}: {dx:.2e}");
        assert!(dw < 1e-5, "∂w {case}: {dw:.2e}");
    }
}

/// The depthwise weight-gradient kernel on one backend against burn's backward on the CPU:
/// the shared cases, one with 13 shares per channel, and a transposed (strided) input; within
/// `limit` of the largest value.
pub(super) fn check_depthwise_kernel<B: Launch>(limit: f64) {
    let mut cases = DEPTHWISE_CASES.to_vec();
    cases.push((2, 3, 40, 40, 7, 3, 0));
    for case in cases {
        let (n, c, h, w, k, p, _) = case;
        let want = depthwise_reference(case);
        for strided in [false, true] {
            let x = own_float::<B, 4>(want.x.to_data());
            let x = if strided {
                own_float::<B, 4>(x.swap_dims(2, 3).into_data()).swap_dims(2, 3)
            } else {
                x
            };
            let r = own_float::<B, 4>(want.r.to_data());
            assert_eq!([x.dtype(), r.dtype()], [own_dtype::<B>(); 2]);
            let got = values(depthwise::cube::weight_gradient(x, r, k, p));
            let error = relative(&got, &want.grad_w);
            let case = format!("{n}×{c}×{h}×{w}, k {k}, p {p}, strided {strided}");
            assert!(error < limit, "∂w {case}: {error:.2e} (limit {limit:.0e})");
        }
    }
}

#[test]
fn depthwise_weight_kernel_equals_burns_cpu_backward() {
    let _serial = serial();
    <CpuTrain as Backend>::seed(&Default::default(), 4);
    check_depthwise_kernel::<Unfused>(1e-5);
    check_depthwise_kernel::<G>(1e-5);
}
