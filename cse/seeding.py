"""One random stream per sample: results never depend on batch size, order or rank."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor


def seed_from_key(key: str, salt: str = "") -> int:
    """A stable 63-bit seed for an image key (independent of Python's hash randomisation)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generators_from_seeds(seeds: Sequence[int] | Tensor) -> list[torch.Generator]:
    """CPU generators, one per sample; noise is drawn on the CPU and moved, so it is device-independent."""
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


def randn(generators: Sequence[torch.Generator], shape: Sequence[int], like: Tensor) -> Tensor:
    """``[len(generators), *shape]`` standard normal noise, row i drawn from generator i."""
    noise = torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in generators])
    return noise.to(device=like.device, dtype=like.dtype)


class PerSampleNoise:
    """Successive standard-normal draws of ``shape`` per sample, each sample on its own stream.

    Draws are made in blocks of ``block`` per generator (one call per sample per block, not per
    step); the block length depends only on ``shape``, so sample i's noise depends only on its seed.
    """

    def __init__(
        self, seeds: Sequence[int] | Tensor, shape: Sequence[int], like: Tensor, block_values: int = 2**20
    ) -> None:
        self.generators = generators_from_seeds(seeds)
        self.shape = tuple(shape)
        self.like = like
        self.block = max(1, min(256, block_values // max(1, math.prod(self.shape))))
        self._buffer: Tensor | None = None
        self._next = 0

    def __call__(self) -> Tensor:
        """``[B, *shape]`` on ``like``'s device and dtype."""
        if self._buffer is None or self._next == self.block:
            draws = [torch.randn((self.block, *self.shape), generator=g, dtype=torch.float32) for g in self.generators]
            self._buffer = torch.stack(draws, dim=1).to(device=self.like.device, dtype=self.like.dtype)
            self._next = 0
        self._next += 1
        return self._buffer[self._next - 1]
