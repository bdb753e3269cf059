//! Where birads' own autodiff operations are switched on: one registry of function pointers,
//! keyed by the pointer's type (which names both the operation and the backend), so the models
//! stay generic over `B: Backend` and look up at run time whether `B` has an own version.
//!
//! `install_gpu_ops` (lib.rs) fills it for the GPU training backends at start; the CPU and
//! inference find nothing and run burn's operations.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

type Registry = RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Use `f` for its operation and backend from now on (`F`: a function pointer type that
/// names both, e.g. `GeluFn<Autodiff<B, C>>`), unless the environment variable `off` is
/// `burn` (to compare with burn's own operation).
pub(crate) fn install<F: Any + Send + Sync + Copy>(f: F, off: &str) {
    if std::env::var(off).is_ok_and(|v| v == "burn") {
        return;
    }
    registry()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(TypeId::of::<F>(), Box::new(f));
}

/// Back to burn's operation for `F`.
pub(crate) fn uninstall<F: Any>() {
    registry()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&TypeId::of::<F>());
}

/// The installed `F`, if any.
pub(crate) fn installed<F: Any + Copy>() -> Option<F> {
    let map = registry().read().unwrap_or_else(|e| e.into_inner());
    map.get(&TypeId::of::<F>())?.downcast_ref::<F>().copied()
}

/// The primitive of a float tensor (what an own operation works on).
pub fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// A float tensor from its primitive.
pub fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    type A = fn(u8) -> u8;
    type B = fn(u16) -> u16;

    #[test]
    fn operations_are_kept_apart_by_their_type() {
        assert!(installed::<A>().is_none());
        install::<A>(|x| x + 1, "BIRADS_OWN_OPS_TEST_UNSET");
        assert_eq!(installed::<A>().map(|f| f(1)), Some(2));
        assert!(installed::<B>().is_none(), "another type finds nothing");
        uninstall::<A>();
        assert!(installed::<A>().is_none());
    }
}
