//! What the kernels that take many tensors per launch share (AdamW's update, amp's weight
//! casts): one thread per value of the outputs' buffers taken one after the other, outputs laid
//! out as their first input where that is a permutation of a contiguous tensor, and the
//! tensors grouped by what the compiled kernel depends on and split into launches.

use burn_cubecl::ops::permute;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

use super::reduce::empty;

/// Where the value at `o` in `out`'s buffer lies in `t`: `o` itself where `t` is laid out as
/// `out` (`same`), else through its coordinates (`out` is dense, so the coordinate along `d`
/// is `o / stride(d) mod shape(d)` in any order of its dimensions).
#[cube]
pub fn at<F: Float, O: Float>(
    t: &Tensor<F>,
    out: &Tensor<O>,
    o: usize,
    #[comptime] same: bool,
) -> usize {
    let mut offset = o;
    if !same {
        offset = 0;
        for d in 0..t.rank() {
            offset += (o / out.stride(d)) % out.shape(d) * t.stride(d);
        }
    }
    offset
}

/// `t`'s dimensions from the slowest to the fastest in memory, where `t` is a permutation of
/// a contiguous tensor (dimensions of size 1, whose stride means nothing, anywhere).
pub fn dense_order<R: CubeRuntime>(t: &CubeTensor<R>) -> Option<Vec<usize>> {
    let (shape, strides) = (t.meta.shape(), t.meta.strides());
    let mut order: Vec<usize> = (0..shape.num_dims()).collect();
    order.sort_by_key(|&d| (std::cmp::Reverse(strides[d]), shape[d] == 1));
    let mut expected = 1;
    for &d in order.iter().rev() {
        if shape[d] != 1 && strides[d] != expected {
            return None;
        }
        expected *= shape[d];
    }
    Some(order)
}

/// An uninitialised tensor of `like`'s shape in `dtype`, laid out as `like` where that is a
/// permutation of a contiguous tensor, else contiguous.
pub fn laid_out_like<R: CubeRuntime>(
    like: &CubeTensor<R>,
    dtype: burn::tensor::DType,
) -> CubeTensor<R> {
    let order = dense_order(like).unwrap_or_else(|| (0..like.meta.num_dims()).collect());
    let shape = like.meta.shape();
    let stored: Vec<usize> = order.iter().map(|&d| shape[d]).collect();
    let mut back = vec![0; order.len()];
    for (j, &d) in order.iter().enumerate() {
        back[d] = j;
    }
    permute(empty(like, stored.into(), dtype), &back)
}

/// `items` grouped by `key` (groups in the order of their first item), each group split into
/// runs of at most `per_launch`: what one launch each takes.
pub fn launches<T, K: PartialEq + Copy>(
    items: &[T],
    key: impl Fn(&T) -> K,
    per_launch: usize,
) -> Vec<(K, Vec<&T>)> {
    let mut groups: Vec<(K, Vec<&T>)> = Vec::new();
    for item in items {
        let k = key(item);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, group)) => group.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups
        .into_iter()
        .flat_map(|(k, group)| {
            group
                .chunks(per_launch.max(1))
                .map(|chunk| (k, chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How many tensors one launch takes when each binds `buffers` buffers: as many as the device
/// binds (one binding left for cubecl's metadata), at most `most`.
pub fn per_launch<R: CubeRuntime>(client: &ComputeClient<R>, buffers: usize, most: usize) -> usize {
    let bindings = client.properties().hardware.max_bindings as usize;
    (bindings.saturating_sub(1) / buffers).clamp(1, most)
}

/// The tensors that `pick` takes from each of `chunk`, as one argument of a kernel.
pub fn sequence<R, T, P>(chunk: &[&P], pick: impl Fn(&P) -> &CubeTensor<R>) -> SequenceArg<R, T>
where
    R: CubeRuntime,
    T: LaunchArg<RuntimeArg<R> = TensorArg<R>>,
{
    chunk
        .iter()
        .map(|p| pick(p).clone().into_tensor_arg())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::launches;

    #[test]
    fn launches_group_by_key_in_first_seen_order_and_split_long_groups() {
        let items = [(1, 'a'), (2, 'b'), (1, 'c'), (1, 'd'), (2, 'e'), (1, 'f')];
        let got: Vec<(i32, String)> = launches(&items, |i| i.0, 2)
            .into_iter()
            .map(|(k, run)| (k, run.iter().map(|i| i.1).collect()))
            .collect();
        let want = [(1, "ac"), (1, "df"), (2, "be")];
        assert_eq!(got, want.map(|(k, s)| (k, s.to_string())));
    }
}
