"""Data sets and transforms: ImageFolder directories, image lists and built-in synthetic sets.

>>> from vitdistill.data import build_dataset, collate_skip, eval_transform
>>> ds = build_dataset("synthetic:shapes?n=600", split="val", transform=eval_transform(model, crop_pct=1.0))
>>> loader = DataLoader(ds, batch_size=64, collate_fn=collate_skip)
>>> for images, labels, indices, n_skipped in loader: ...
"""

from vitdistill.data.datasets import (
    IMAGE_EXTENSIONS,
    ImageFileDataset,
    build_dataset,
    collate_skip,
    image_folder,
    image_list,
)
from vitdistill.data.images import load_rgb, to_rgb
from vitdistill.data.synthetic import SYNTHETIC, ShapesDataset, parse_spec
from vitdistill.data.transforms import eval_transform, model_input_size, resolve_data_config, train_transform

__all__ = [
    "IMAGE_EXTENSIONS",
    "SYNTHETIC",
    "ImageFileDataset",
    "ShapesDataset",
    "build_dataset",
    "collate_skip",
    "eval_transform",
    "image_folder",
    "image_list",
    "load_rgb",
    "model_input_size",
    "parse_spec",
    "resolve_data_config",
    "to_rgb",
    "train_transform",
]
