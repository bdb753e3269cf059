//! The built-in BI-RADS model: a MyDenseNet grader trained by birads on all 1,875 images of
//! BUS-BRA (categories 2, 3, 4, 5) with `configs/busbra.toml`. Its weights are an ordinary
//! birads checkpoint, `models/birads-busbra.safetensors`, compiled into the binary and read
//! by the same checkpoint reader as any user's file; `models/MODEL_CARD.md` describes it
//! (data, licence, cross-validated figures, limits). For research, not for diagnosis.

use burn::prelude::Backend;

use crate::checkpoint::{load_own_bytes, AnyModel, CheckpointMeta, Purpose};
use crate::weights::WeightsError;

/// What users type to ask for it (`--cla-weights builtin`, `Model.load("builtin")`).
pub const KEYWORD: &str = "builtin";

/// Its name in outputs.
pub const NAME: &str = "birads-busbra";

/// The model card.
pub const CARD: &str = include_str!("../../../models/MODEL_CARD.md");

/// Where the card lives in the repository.
pub const CARD_PATH: &str = "models/MODEL_CARD.md";

static WEIGHTS: &[u8] = include_bytes!("../../../models/birads-busbra.safetensors");

/// The checkpoint's bytes.
pub fn weights() -> &'static [u8] {
    WEIGHTS
}

/// Whether a weights argument names the built-in model.
pub fn is_builtin(arg: &std::path::Path) -> bool {
    arg.as_os_str() == KEYWORD
}

/// The built-in BI-RADS model and its metadata (preprocessing, classes).
pub fn load<B: Backend>(device: &B::Device) -> Result<(AnyModel<B>, CheckpointMeta), WeightsError> {
    load_own_bytes(WEIGHTS, NAME, Purpose::Grading, device)
}
