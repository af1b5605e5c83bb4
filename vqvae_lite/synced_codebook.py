# Generated from notebooks/11_several_gpus.ipynb by tools/export.py: edit the notebook.
"""One codebook over every process: the collectives the codebook needs, and the mixins that
make any quantiser, and every codebook nested inside it, decide from the global batch.

Appendix 11 (`notebooks/11_several_gpus.ipynb`) shows what goes wrong without them and checks
the fix on CPU processes joined over gloo.
"""

from collections.abc import Callable
from functools import cache

import torch
import torch.distributed as dist
from torch import Tensor

from vqvae_lite.ema import EMAVectorQuantizer
from vqvae_lite.quantizer import Quantizer


def world() -> tuple[int, int]:
    """(rank, processes) of this process: (0, 1) unless torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_sum(x: Tensor) -> Tensor:
    """x summed over every process: every process gets the same bits (a new tensor)."""
    x = x.detach().clone()
    dist.all_reduce(x)
    return x


def gather_rows(x: Tensor) -> Tensor:
    """Every process's rows (n_r, ...) one after the other in rank order: (sum of n_r, ...)."""
    _, processes = world()
    size = torch.tensor(len(x), device=x.device)
    sizes = [torch.empty_like(size) for _ in range(processes)]
    dist.all_gather(sizes, size)
    padded = x.new_zeros(int(max(sizes)), *x.shape[1:])  # all_gather needs equal shapes
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(processes)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n)] for part, n in zip(parts, sizes, strict=True)])


class SyncedStatistics:
    """Chapter 7's EMA statistics of the global batch (a mixin that `synchronize` puts in
    front of every EMA codebook's class): this batch's counts n_k and sums are summed over the
    processes before the update, so the averages see the global batch."""

    def batch_statistics(self, flat: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        counts, sums = super().batch_statistics(flat, indices)  # this process's batch
        both = all_sum(torch.cat([counts.unsqueeze(1), sums], dim=1))  # (K, 1 + D), global
        return both[:, 0], both[:, 1:]


class SyncedUpkeep:
    """The quantiser's upkeep and start, from every process's data (a mixin that
    `synchronize` puts in front of the quantiser's class):

    - upkeep: the dead-code counters and the restarts run on every process's codes and
      encodings, gathered in rank order, with the same restart generator everywhere (a
      quantiser that holds codebooks, like residual VQ, hands them the gathered data);
    - initialisation (k-means, chapter 7): on every process's sample, gathered; then rank 0's
      state is broadcast, so the bits agree even where a GPU's sums are not deterministic.
    """

    def upkeep(self, z_e: Tensor, indices: Tensor) -> int:
        return super().upkeep(gather_rows(z_e), gather_rows(indices))  # (P*B, D, h, w)

    def initialize(self, sample: Callable[[], Tensor]) -> None:
        super().initialize(lambda: gather_rows(sample()))  # (N, D) from every process
        for tensor in [*self.parameters(), *self.buffers()]:
            dist.broadcast(tensor.data, src=0)


@cache
def synced_class(mixin: type, cls: type) -> type:
    """`cls` with `mixin` in front: the same state, the same checkpoint keys."""
    return type(f"{mixin.__name__}{cls.__name__}", (mixin, cls), {})


def synchronize(quantizer: Quantizer) -> Quantizer:
    """Make `quantizer` one quantiser over every process of the group, in place: every EMA
    codebook inside it, however deeply nested, learns from the global batch, and its upkeep
    and start see every process's data."""
    for module in quantizer.modules():  # the quantiser itself first, then what it holds
        if isinstance(module, EMAVectorQuantizer):
            module.__class__ = synced_class(SyncedStatistics, type(module))
    quantizer.__class__ = synced_class(SyncedUpkeep, type(quantizer))
    return quantizer
