"""birads: BI-RADS grading (2, 3, 4A, 4B, 4C, 5) and lesion features (boundary, calcification,
direction, shape) for breast ultrasound, from Rust.

    import birads
    img = birads.load_image("scan.png")               # uint8 [H, W, 3], as `birads predict` decodes
    x = birads.preprocess(img)                        # float32 [3, 224, 224], the original chain
    model = birads.Model.load()                       # the built-in BUS-BRA model ("builtin")
    p = model.predict(["a.png", "b.jpg"])             # float32 [2, 4]: P(2), P(3), P(4), P(5)
    birads.predict_folder("testB", "out")             # cla_pre.csv, as the competition's run.py
    metrics = birads.evaluate("out", "testB/cla_gt.csv")
    aug = birads.Augment(seed=0)                      # training augmentation for a Dataset
    tensor, box = aug(img, (0.5, 0.4, 0.2, 0.1), index=7)

Everything runs on the CPU with the GIL released; errors raise `birads.BiradsError` with the
command-line tool's messages.
"""
from ._native import (
    Augment,
    BiradsError,
    Model,
    __version__,
    cut_black,
    evaluate,
    load_image,
    predict_folder,
    preprocess,
)

__all__ = [
    "Augment",
    "BiradsError",
    "Model",
    "__version__",
    "cut_black",
    "evaluate",
    "load_image",
    "predict_folder",
    "preprocess",
]
