"""Images per second of the VQ-VAE trained by one CPU process and by two CPU processes joined
over gloo (appendix 11), each with one thread, at the same global batch; prints both and the
ratio (not a test). The baseline, one process, is measured in the same run.

    python benchmarks/ddp_scaling.py [--steps 12] [--global-batch 64]

Two processes with one thread each can be at most twice as fast as one; what is left is the
price of the all-reduces (gradients, EMA statistics, logs) and the gathered encodings. The
model is chapter 5's default size, with the default command line's EMA codebook and restarts,
on synthetic 32x32 images. GPUs over NCCL are not measured here.
"""

import argparse
import sys
from pathlib import Path

import torch

from vqvae_lite.codebook_upkeep import DEFAULT_MODELS
from vqvae_lite.image_folder import ImageSplits
from vqvae_lite.train_config import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from distributed_harness import run_processes, trace_training  # noqa: E402  (the tests' own)

LOG_EVERY = 2  # the first log window (warm-up steps) is left out of the pace


def images_per_second(config: TrainConfig, splits: ImageSplits) -> float:
    """The mean pace of the log windows after the first, in images of all processes per s."""
    history = trace_training(DEFAULT_MODELS["cpu"], config, splits)["history"]
    paces = [row["images_per_s"] for row in history[1:]]
    return sum(paces) / len(paces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--global-batch", type=int, default=64)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (512, 3, 32, 32), generator=generator, dtype=torch.uint8)
    labels = torch.zeros(512, dtype=torch.int64)
    splits = ImageSplits(images, images[:64], labels, labels[:64], ["noise"], "synthetic")
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.global_batch,
        warmup_steps=0,
        log_every=LOG_EVERY,
        checkpoint_every=args.steps,
        device="cpu",
        amp=False,
    )
    one = run_processes(1, images_per_second, config, splits)[0]
    half = TrainConfig(**{**vars(config), "batch_size": args.global_batch // 2})
    two = run_processes(2, images_per_second, half, splits)
    print(f"global batch {args.global_batch}, {args.steps} steps, 1 thread per process")
    print(f"1 process : {one:8.1f} img/s")
    print(f"2 processes: {two[0]:8.1f} img/s (rank 0's count of both processes' images)")
    print(f"ratio 2 / 1: {two[0] / one:.2f} (2.00 would be perfect scaling)")


if __name__ == "__main__":
    main()
