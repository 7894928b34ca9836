"""Real images that installed packages ship, so a fresh clone runs offline.

Every loader returns uint8 arrays (N, H, W, C) and never touches the network:
- ``faces``    — the 100 face crops of scikit-image's ``lfw_subset`` (25x25 grey);
- ``nonfaces`` — the other 100 images of ``lfw_subset``: background patches, handy as
  contamination when testing that validation catches wrong data;
- ``digits``   — scikit-learn's 1,797 handwritten 8x8 digits;
- ``textures`` — random crops of scikit-image's brick, grass and gravel textures;
- ``histology``— random RGB crops of scikit-image's immunohistochemistry slide.

Not sources, but contaminants for measuring validation (:func:`photo_patches`: patches
of other scikit-image photos; :func:`to_grey`: RGB patches as a grey scenario sees them).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, C) float in [0, 1] -> uint8 (N, size, size, C), antialiased."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _crops(image: np.ndarray, n: int, crop: int, seed: int) -> np.ndarray:
    """n random crop x crop patches of one (H, W[, C]) image."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    positions = rng.choice((h - crop + 1) * (w - crop + 1), size=n, replace=False)  # no repeated crop
    ys, xs = np.divmod(positions, w - crop + 1)
    return np.stack([image[y : y + crop, x : x + crop] for y, x in zip(ys, xs)])


def faces(size: int = 32) -> np.ndarray:
    from skimage.data import lfw_subset

    return _resize(lfw_subset()[:100, :, :, None], size)


def nonfaces(size: int = 32) -> np.ndarray:
    from skimage.data import lfw_subset

    return _resize(lfw_subset()[100:, :, :, None], size)


def digits(size: int = 16) -> np.ndarray:
    from sklearn.datasets import load_digits

    return _resize(load_digits().images[:, :, :, None] / 16.0, size)


def textures(size: int = 32, per_texture: int = 100, crop: int = 64, seed: int = 0) -> np.ndarray:
    from skimage import data

    out = []
    for i, name in enumerate(("brick", "grass", "gravel")):
        img = getattr(data, name)().astype(np.float32) / 255.0
        out.append(_crops(img, per_texture, crop, seed + i)[..., None])
    return _resize(np.concatenate(out), size)


def histology(size: int = 32, n: int = 300, crop: int = 64, seed: int = 0) -> np.ndarray:
    from skimage.data import immunohistochemistry

    img = immunohistochemistry().astype(np.float32) / 255.0
    return _resize(_crops(img, n, crop, seed), size)


PHOTOS = ("camera", "coins", "moon", "astronaut", "page", "text", "coffee", "chelsea", "rocket")
"""scikit-image photos (colour ones turned grey) that no built-in source uses."""


def to_grey(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, H, W, 1) with ITU-R 601 luma, rounded as Pillow's ``L``
    conversion does; grey input is returned as it is."""
    if images.shape[-1] == 1:
        return images
    rgb = images.astype(np.int32)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def photo_patches(size: int = 32, n: int = 30, crop: int = 25, scale: float = 1.0, seed: int = 0, names: tuple[str, ...] = PHOTOS) -> np.ndarray:
    """``n`` grey crop x crop patches of scikit-image photos (``names`` in turn, the photo
    first resized by ``scale``), resized to ``size`` as :func:`faces` is: at ``crop=25``
    the same pipeline as lfw_subset's 25x25 faces. uint8 (n, size, size, 1)."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = getattr(data, names[i % len(names)])()
        img = to_grey(img[None, ..., :3])[0, ..., 0] if img.ndim == 3 else img
        if scale != 1.0:
            h, w = img.shape
            img = np.asarray(Image.fromarray(img).resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.Resampling.LANCZOS))
        h, w = img.shape
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        out.append(img[y : y + crop, x : x + crop].astype(np.float32) / 255.0)
    return _resize(np.stack(out)[..., None], size)


SOURCES: dict[str, Callable[..., np.ndarray]] = {
    "faces": faces,
    "nonfaces": nonfaces,
    "digits": digits,
    "textures": textures,
    "histology": histology,
}


def load(name: str, size: int, **kwargs) -> np.ndarray:
    try:
        fn = SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown built-in source {name!r}; allowed: {sorted(SOURCES)}") from None
    return fn(size, **kwargs)
