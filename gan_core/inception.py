"""Pure-PyTorch FID Inception-v3 feature extractor (2048-d pool3 features).

This is the TensorFlow-compatible Inception-v3 graph ("2015-12-05", hash prefix
6726825d) that the original TTUR FID code, pytorch-fid, torch-fidelity and
torchmetrics all use. It differs from torchvision's ImageNet Inception-v3:

* 1008-class ``fc`` layer (kept so the weights file loads strictly; it is never
  used to compute features);
* Mixed_5b..5d, Mixed_6b..6e and Mixed_7b average-pool their pooling branch with
  ``count_include_pad=False`` (TensorFlow does not count padded zeros);
* Mixed_7c (the last block) uses a *max* pool in its pooling branch;
* inputs are resized to 299x299 with bilinear interpolation and fed in [-1, 1].

Module and parameter names match the state-dict keys of the standard weights
file ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid) /
``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity), e.g.
``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``,
``fc.weight``.

Nothing is downloaded at run time: :func:`load_inception` takes a local path.
Weights are read with ``safetensors`` or ``torch.load(..., weights_only=True)``
only; a pickle payload is never executed.
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_URLS",
    "INPUT_SIZE",
    "FEATURE_DIM",
    "InceptionV3Features",
    "load_inception",
    "resize_bilinear_tf1",
]

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URLS = (
    # pytorch-fid release asset
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth",
    # torch-fidelity release asset (same network, same state-dict key names)
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth",
)
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008

_RESIZE_MODES = ("tf1", "torch")


# --------------------------------------------------------------------------- #
# Input resizing
# --------------------------------------------------------------------------- #
def _tf1_axis_indices(in_size: int, out_size: int, device: torch.device):
    """Source indices and weights of TF1 ``resize_bilinear(align_corners=False)``.

    TF 1.x (``half_pixel_centers=False``): ``src = dst * (in / out)`` computed in
    float32, ``lo = floor(src)``, ``hi = min(lo + 1, in - 1)``, ``w = src - lo``.
    """
    scale = torch.tensor(in_size / out_size, dtype=torch.float32, device=device)
    src = torch.arange(out_size, dtype=torch.float32, device=device) * scale
    lo = src.floor()
    weight = src - lo
    lo = lo.long().clamp_(0, in_size - 1)
    hi = (lo + 1).clamp_(max=in_size - 1)
    return lo, hi, weight


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of an (N, C, H, W) float tensor as TensorFlow 1.x does it.

    This reproduces the ``ResizeBilinear`` op embedded in the original FID
    Inception graph (and torch-fidelity's / torchmetrics' port of it), which
    samples at ``dst * in/out`` without half-pixel centres -- unlike
    ``F.interpolate(..., align_corners=False)``.
    """
    out_h, out_w = size
    in_h, in_w = x.shape[-2:]
    if (in_h, in_w) == (out_h, out_w):
        return x
    y_lo, y_hi, wy = _tf1_axis_indices(in_h, out_h, x.device)
    x_lo, x_hi, wx = _tf1_axis_indices(in_w, out_w, x.device)
    wy = wy.to(x.dtype).view(1, 1, out_h, 1)
    wx = wx.to(x.dtype).view(1, 1, 1, out_w)

    top = x.index_select(2, y_lo)
    bottom = x.index_select(2, y_hi)
    top_l, top_r = top.index_select(3, x_lo), top.index_select(3, x_hi)
    bot_l, bot_r = bottom.index_select(3, x_lo), bottom.index_select(3, x_hi)
    top = top_l + (top_r - top_l) * wx
    bottom = bot_l + (bot_r - bot_l) * wx
    return top + (bottom - top) * wy


# --------------------------------------------------------------------------- #
# Building blocks (names mirror the weights file's state-dict keys)
# --------------------------------------------------------------------------- #
class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool ignores padded zeros.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)

        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)

        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)

        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (unchanged from torchvision)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)

        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        b3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b3dbl, bp], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)

        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))

        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))

        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = self.branch7x7dbl_1(x)
        b7dbl = self.branch7x7dbl_2(b7dbl)
        b7dbl = self.branch7x7dbl_3(b7dbl)
        b7dbl = self.branch7x7dbl_4(b7dbl)
        b7dbl = self.branch7x7dbl_5(b7dbl)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, b7dbl, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (unchanged from torchvision)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)

        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        b7 = self.branch7x7x3_2(b7)
        b7 = self.branch7x7x3_3(b7)
        b7 = self.branch7x7x3_4(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class _FIDInceptionEBase(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)

        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))

        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))

        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)

        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)

        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1)

        bp = self.branch_pool(self._pool(x))
        return torch.cat([b1, b3, b3dbl, bp], 1)


class FIDInceptionE_1(_FIDInceptionEBase):
    """Mixed_7b: average pool without counting padding."""

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return _tf_avg_pool(x)


class FIDInceptionE_2(_FIDInceptionEBase):
    """Mixed_7c: the TF graph uses a *max* pool here (a quirk of that graph)."""

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


# --------------------------------------------------------------------------- #
# The network
# --------------------------------------------------------------------------- #
class InceptionV3Features(nn.Module):
    """FID Inception-v3 returning 2048-d pool3 features.

    ``forward(x)``: ``x`` is a float tensor (N, C, H, W) with values in [-1, 1],
    C in {1, 3} (1 channel is repeated to RGB), any H, W. It is resized to
    299x299 bilinearly and run through the network; returns (N, 2048) float32.

    ``resize_mode``:
      * ``"tf1"`` (default) -- TensorFlow 1.x ``resize_bilinear`` semantics, as in
        the original TF FID graph, torch-fidelity and torchmetrics;
      * ``"torch"`` -- ``F.interpolate(mode="bilinear", align_corners=False)`` as in
        pytorch-fid. The two give slightly different FIDs for non-299 inputs.

    The module is permanently in eval mode (``train()`` is a no-op) and its
    parameters do not require grad (gradients w.r.t. the input still flow).
    A freshly constructed module has random weights; use :func:`load_inception`.
    """

    #: Feature dimension (read by torchmetrics / gan_core.features.FeatureAdapter
    #: instead of probing the network with a dummy image).
    num_features: int = FEATURE_DIM

    def __init__(self, resize_mode: str = "tf1"):
        super().__init__()
        if resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}, got {resize_mode!r}")
        self.resize_mode = resize_mode

        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)

        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE_1(1280)
        self.Mixed_7c = FIDInceptionE_2(2048)

        # Present in the weights file (1008 TF classes); unused for features.
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

        self.requires_grad_(False)
        super().train(False)

    # -- eval mode is sticky ------------------------------------------------
    def train(self, mode: bool = True) -> "InceptionV3Features":
        """Always stays in eval mode (BatchNorm uses the stored statistics)."""
        return super().train(False)

    # -- forward ----------------------------------------------------------
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or x.dim() != 4:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"expected a 4-D (N, C, H, W) tensor, got {shape}")
        if not torch.is_floating_point(x):
            raise TypeError(
                f"expected a float tensor in [-1, 1], got dtype {x.dtype}; "
                "convert uint8 images with x.float() / 127.5 - 1"
            )
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        x = x.to(self.Conv2d_1a_3x3.conv.weight.dtype)
        if self.resize_mode == "tf1":
            x = resize_bilinear_tf1(x, (INPUT_SIZE, INPUT_SIZE))
        elif x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x)  # N x 3 x 299 x 299, in [-1, 1]
        x = self.Conv2d_1a_3x3(x)  # N x 32 x 149 x 149
        x = self.Conv2d_2a_3x3(x)  # N x 32 x 147 x 147
        x = self.Conv2d_2b_3x3(x)  # N x 64 x 147 x 147
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # N x 64 x 73 x 73
        x = self.Conv2d_3b_1x1(x)  # N x 80 x 73 x 73
        x = self.Conv2d_4a_3x3(x)  # N x 192 x 71 x 71
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # N x 192 x 35 x 35
        x = self.Mixed_5b(x)  # N x 256 x 35 x 35
        x = self.Mixed_5c(x)  # N x 288 x 35 x 35
        x = self.Mixed_5d(x)  # N x 288 x 35 x 35
        x = self.Mixed_6a(x)  # N x 768 x 17 x 17
        x = self.Mixed_6b(x)
        x = self.Mixed_6c(x)
        x = self.Mixed_6d(x)
        x = self.Mixed_6e(x)  # N x 768 x 17 x 17
        x = self.Mixed_7a(x)  # N x 1280 x 8 x 8
        x = self.Mixed_7b(x)  # N x 2048 x 8 x 8
        x = self.Mixed_7c(x)  # N x 2048 x 8 x 8
        x = F.adaptive_avg_pool2d(x, output_size=(1, 1))  # pool3
        return torch.flatten(x, 1).to(torch.float32)  # N x 2048


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #
def _missing_weights_message(path: Path) -> str:
    urls = "\n".join(f"    {u}" for u in FID_WEIGHTS_URLS)
    return (
        f"FID Inception weights not found at '{path}'. Nothing is downloaded at run "
        f"time. On a machine with internet access, fetch '{FID_WEIGHTS_FILENAME}' "
        "(the pytorch-fid / torch-fidelity GitHub release asset; torch-fidelity names "
        "the same weights 'weights-inception-2015-12-05-6726825d.pth'), e.g. from:\n"
        f"{urls}\n"
        "copy it to this machine, and pass its local path to "
        "gan_core.inception.load_inception(path) (or to the evaluation setting that "
        "forwards to it)."
    )


def _unpickling_reason(exc: BaseException) -> str:
    # torch's message suggests retrying with weights_only=False, which this
    # project never does; keep only the part that says what was rejected.
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].split("Check the documentation of torch.load", 1)[0]
    text = " ".join(text.split())
    return text or type(exc).__name__


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise ValueError(f"could not read safetensors file '{path}': {exc}") from exc
    if suffix in (".pth", ".pt"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"refused to load '{path}': torch.load(weights_only=True) rejected its "
                "pickle contents (it references objects other than plain tensors / "
                "containers, or is not a valid checkpoint). Arbitrary pickled objects "
                "are never executed here. Use the standard "
                f"'{FID_WEIGHTS_FILENAME}' or a .safetensors export. "
                f"Details: {_unpickling_reason(exc)}"
            ) from exc
        except (RuntimeError, EOFError) as exc:
            raise ValueError(f"could not read '{path}' as a torch checkpoint: {exc}") from exc
        if not isinstance(obj, Mapping):
            raise ValueError(
                f"'{path}' does not contain a state dict (got {type(obj).__name__})"
            )
        return obj
    raise ValueError(
        f"unsupported weights file extension for '{path}': expected .pth, .pt or .safetensors"
    )


def _format_keys(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} total)" if len(keys) > limit else f" ({len(keys)} total)")


def load_inception(path: str | os.PathLike, resize_mode: str = "tf1") -> InceptionV3Features:
    """Build :class:`InceptionV3Features` and strictly load local FID weights.

    ``path``: local ``.pth`` / ``.pt`` (read with ``weights_only=True``) or
    ``.safetensors`` file holding the state dict of
    ``pt_inception-2015-12-05-6726825d.pth``. Returns the model on CPU in eval
    mode.

    Raises ``FileNotFoundError`` when the file is absent (nothing is downloaded),
    ``ValueError`` for pickle payloads, unreadable files, or key/shape mismatches.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_weights_message(path))

    state = OrderedDict(_read_state_dict(path))
    bad = [k for k, v in state.items() if not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"'{path}' is not a flat tensor state dict; non-tensor entries: {_format_keys(bad)}")

    model = InceptionV3Features(resize_mode=resize_mode)
    expected = model.state_dict()
    # BatchNorm's num_batches_tracked counters are irrelevant in eval mode; files
    # converted without them (older torch / safetensors exports) are accepted.
    for key, value in expected.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [f"'{path}' does not match the FID Inception-v3 state dict."]
        if missing:
            parts.append(f"Missing keys: {_format_keys(missing)}.")
        if unexpected:
            parts.append(f"Unexpected keys: {_format_keys(unexpected)}.")
        parts.append(f"Expected the weights of '{FID_WEIGHTS_FILENAME}'.")
        raise ValueError(" ".join(parts))

    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if mismatched:
        raise ValueError(f"'{path}' has tensors of the wrong shape: {_format_keys(mismatched)}")

    model.load_state_dict(state, strict=True)
    model.train(False)
    return model
