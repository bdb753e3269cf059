//! What makes a run resumable: after every epoch the model and the optimiser (and the fast
//! engine's backbone state) are written under `out/state`, then `state/train_state.json`, the
//! commit point, names them; `--resume` reads them back.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::validate::ValResult;
use super::{io, Net, TrainError};
use crate::config::TrainConfig;
use crate::fast::FastBackbone;
use crate::history::EpochRecord;

/// Saved after every epoch; the commit point of a checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct TrainState {
    pub epochs_done: u64,
    pub best_value: Option<f64>,
    pub best_epoch: Option<u64>,
    pub history: Vec<EpochRecord>,
    pub model_file: String,
    pub optimizer_file: String,
    /// The fast engine's backbone optimiser state (empty: the run trains with burn).
    #[serde(default)]
    pub fast_file: String,
}

const STATE: &str = "state/train_state.json";

type Files = BinFileRecorder<FullPrecisionSettings>;

fn checkpoint_error(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint(format!("{}: {e}", path.display()))
}

/// The state of the run in `out` with its model and optimiser loaded back.
pub(super) fn resume<B, M, O>(
    out: &Path,
    model: M,
    optim: O,
    device: &B::Device,
) -> Result<(TrainState, M, O), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Net<B>,
    O: Optimizer<M, B>,
{
    let path = out.join(STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        TrainError::Checkpoint(format!(
            "cannot resume: {} ({e}); no epoch of this run completed yet?",
            path.display()
        ))
    })?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| checkpoint_error(&path, e))?;
    let recorder = Files::new();
    let mp = out.join("state").join(&state.model_file);
    let record = recorder
        .load(mp.clone(), device)
        .map_err(|e| checkpoint_error(&mp, e))?;
    let model = model.load_record(record);
    let op = out.join("state").join(&state.optimizer_file);
    let record = recorder
        .load(op.clone(), device)
        .map_err(|e| checkpoint_error(&op, e))?;
    let optim = optim.load_record(record);
    Ok((state, model, optim))
}

/// The fast engine's backbone state back from a resumed run; an error when the run trained
/// with the other engine.
pub(super) fn resume_fast(
    out: &Path,
    state: &TrainState,
    fast: Option<&mut FastBackbone>,
) -> Result<(), TrainError> {
    match (fast, state.fast_file.is_empty()) {
        (Some(f), false) => {
            let p = out.join("state").join(&state.fast_file);
            f.load(&p).map_err(|e| checkpoint_error(&p, e))
        }
        (None, true) => Ok(()),
        (Some(_), true) => Err(TrainError::Checkpoint(
            "this run trained with --engine burn; resume it with --engine burn".into(),
        )),
        (None, false) => Err(TrainError::Checkpoint(
            "this run trained with the fast CPU engine; resume it with --engine fast \
             (on the CPU)"
                .into(),
        )),
    }
}

/// Commit epoch `record.epoch`: the new files first, then the state file that points at them,
/// then the previous epoch's files are removed.
pub(super) fn commit_epoch<B, M, O>(
    out: &Path,
    state: &mut TrainState,
    record: EpochRecord,
    model: &M,
    optim: &O,
    fast: Option<&mut FastBackbone>,
) -> Result<(), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Clone,
    O: Optimizer<M, B>,
{
    let epoch = record.epoch;
    let recorder = Files::new();
    let (mf, of) = (format!("model-{epoch:04}"), format!("optim-{epoch:04}"));
    let failed = |e: burn::record::RecorderError| TrainError::Checkpoint(e.to_string());
    recorder
        .record(model.clone().into_record(), out.join("state").join(&mf))
        .map_err(failed)?;
    recorder
        .record(optim.to_record(), out.join("state").join(&of))
        .map_err(failed)?;
    let previous = [
        state.model_file.clone(),
        state.optimizer_file.clone(),
        state.fast_file.clone(),
    ];
    if let Some(f) = fast {
        let ff = format!("fast-{epoch:04}.bin");
        f.save(&out.join("state").join(&ff))
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        state.fast_file = ff;
    }
    state.model_file = format!("{mf}.bin");
    state.optimizer_file = format!("{of}.bin");
    state.epochs_done = epoch;
    state.history.push(record);
    let json = serde_json::to_vec_pretty(&state).expect("serialisable state");
    birads_data::atomic::write_atomic(&out.join(STATE), &json).map_err(io(out))?;
    let current = [&state.model_file, &state.optimizer_file, &state.fast_file];
    for old in previous {
        if !old.is_empty() && !current.contains(&&old) {
            let _ = std::fs::remove_file(out.join("state").join(old));
        }
    }
    Ok(())
}

/// What a saved model says of its training (the checkpoint's metadata).
pub(super) fn meta(cfg: &TrainConfig, epoch: u64, val: Option<&ValResult>) -> serde_json::Value {
    serde_json::json!({
        "preprocess": cfg.preprocess,
        "classes": cfg.classes,
        "task": cfg.task,
        "epoch": epoch,
        "val_accuracy": val.map(|v| v.accuracy),
        "val_f1": val.map(|v| v.f1),
        "trained_with": format!("birads {}", env!("CARGO_PKG_VERSION")),
    })
}
