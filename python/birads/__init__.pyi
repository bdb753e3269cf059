"""Type stubs of the birads package (its native module, birads._native)."""
import os
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

PathLike = Union[str, "os.PathLike[str]"]
ImageLike = Union[PathLike, npt.NDArray[np.uint8]]
Box = Tuple[float, float, float, float]

__version__: str

class BiradsError(Exception):
    """An error from birads, with the message the command-line tool gives."""

def load_image(path: PathLike) -> npt.NDArray[np.uint8]:
    """Decode an image file (JPEG, PNG, BMP, DICOM) to RGB pixels as `birads predict` does:
    uint8 [height, width, 3]."""

def preprocess(
    image: ImageLike,
    model: Optional["Model"] = None,
    *,
    size: Optional[int] = None,
    crop: Optional[int] = None,
    cut_black: Optional[bool] = None,
) -> npt.NDArray[np.float32]:
    """The model-input tensor of an image, float32 [3, size, size], exactly what `birads
    predict` feeds the model: by default the original chain (CenterCrop 672 → Resize 224 →
    Normalize), with `model` that model's own chain; `size`, `crop` (0: none) and `cut_black`
    override single steps."""

def cut_black(image: ImageLike) -> Tuple[npt.NDArray[np.uint8], Tuple[int, int, int, int]]:
    """CutBlack on its own: the trimmed image and its box (x0, y0, x1, y1) in the input."""

def predict_folder(
    input: PathLike,
    output: PathLike = ".",
    *,
    cla_weights: Optional[PathLike] = None,
    fea_weights: Optional[PathLike] = None,
    probabilities: bool = False,
    batch_size: int = 8,
    tta: bool = False,
) -> dict[str, Any]:
    """`birads predict`: the competition CSVs for a testB-like or flat folder. Without weights,
    the built-in BI-RADS model. Returns counts ('birads', 'features'), 'written' files,
    'skipped' (image, reason) pairs, 'notes' and model 'sources'."""

def evaluate(
    pred: Union[PathLike, Sequence[PathLike]],
    truth: Union[PathLike, Sequence[PathLike]],
    *,
    report: Optional[PathLike] = None,
) -> dict[str, Any]:
    """The metrics of `birads eval` (the content of eval.json); with `report`, also writes
    eval.json, report.html and the plots there."""

class Model:
    """A BI-RADS model or the lesion-feature model, ready to predict on the CPU."""

    @staticmethod
    def load(path: PathLike = "builtin", *, task: Optional[str] = None) -> "Model":
        """'builtin', the original MyConv.pth / MyDense.pth, or a birads checkpoint;
        `task` ('cls' or 'fea') says what original weights are for."""
    @property
    def classes(self) -> list[str]: ...
    @property
    def purpose(self) -> str:
        """'grading' or 'features'."""
    @property
    def architecture(self) -> str:
        """'MyConvNeXt' or 'MyDenseNet'."""
    @property
    def source(self) -> str: ...
    @property
    def input_size(self) -> int: ...
    @property
    def preprocess(self) -> dict[str, Any]: ...
    def predict(
        self,
        images: Union[ImageLike, Sequence[ImageLike], npt.NDArray[np.float32]],
        *,
        batch_size: int = 8,
        threads: Optional[int] = None,
    ) -> npt.NDArray[np.float32]:
        """Probabilities [N, classes] (BI-RADS) or [N, 4] (P(suspicious) per feature) for
        paths, uint8 image arrays, or preprocessed float32 tensors [N, 3, S, S]."""
    def export_onnx(self, path: PathLike) -> None:
        """Write the model as ONNX (as `birads export --onnx`)."""

class Augment:
    """The training augmentation chain as a seeded callable (CutMix excluded)."""

    def __init__(
        self,
        seed: int = 0,
        *,
        preset: str = "original",
        config: Optional[PathLike] = None,
        size: Optional[int] = None,
    ) -> None: ...
    @property
    def size(self) -> int: ...
    def __call__(
        self,
        image: ImageLike,
        box: Optional[Box] = None,
        *,
        index: Optional[int] = None,
        epoch: int = 0,
    ) -> Tuple[npt.NDArray[np.float32], Optional[Box]]:
        """(float32 [3, size, size] tensor, lesion box (x0, y0, x1, y1) in its pixels or None);
        `box` is the lesion as normalised (cx, cy, w, h). Same (seed, epoch, index), same
        result."""
