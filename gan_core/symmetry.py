"""Symmetries of a data set, as the group of image flips and quarter turns they generate.

A scenario may declare that its images keep their meaning under some flips or turns
(a face mirrored left-right is still a face). Measures of "is this like the data" must
then not tell an image from its mirror: features are averaged over the group. Imports
torch only.

Names: ``horizontal_flip`` (left-right), ``vertical_flip`` (up-down), ``rotate90`` (a
quarter turn), ``transpose`` (mirror about the main diagonal). The group they generate
is a subgroup of the 8 flips and turns of a square (D4), found by closing the set under
composition.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

Op = Callable[[torch.Tensor], torch.Tensor]

GENERATORS: dict[str, Op] = {
    "horizontal_flip": lambda x: x.flip(-1),
    "vertical_flip": lambda x: x.flip(-2),
    "rotate90": lambda x: torch.rot90(x, 1, dims=(-2, -1)),
    "transpose": lambda x: x.transpose(-2, -1),
}


def group(symmetries: Iterable[str]) -> list[Op]:
    """Every element of the group the named symmetries generate, the identity first
    (a list of 1 to 8 functions on (..., H, W) tensors of square images)."""
    gens = []
    for name in symmetries:
        try:
            gens.append(GENERATORS[name])
        except KeyError:
            raise ValueError(f"unknown symmetry {name!r}; allowed: {sorted(GENERATORS)}") from None
    probe = torch.arange(9.0).view(3, 3)  # no symmetry of its own: each element moves it differently
    elements: dict[tuple[float, ...], Op] = {tuple(probe.flatten().tolist()): lambda x: x}
    frontier = list(elements.values())
    while frontier:
        new = []
        for f in frontier:
            for g in gens:
                h = (lambda f, g: lambda x: g(f(x)))(f, g)
                key = tuple(h(probe).flatten().tolist())
                if key not in elements:
                    elements[key] = h
                    new.append(h)
        frontier = new
    return list(elements.values())


def symmetrized(fn: Callable[[torch.Tensor], torch.Tensor], symmetries: Iterable[str]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> mean over the group of fn(g(x))``: features that do not tell an image from
    its declared symmetric images (``fn`` itself when there are none)."""
    ops = group(symmetries)
    if len(ops) == 1:
        return fn
    return lambda x: torch.stack([fn(g(x)) for g in ops]).mean(0)
