"""One prepared check for a machine with a CUDA GPU: speed, memory and bf16 correctness.

    python benchmarks/gpu_check.py                       # on a CUDA machine, about 5 minutes
    python benchmarks/gpu_check.py --device cpu --steps 20 --speed-steps 5 --no-compile

Reports, and writes to benchmarks/results/gpu_check_<device>.txt:

1. whether the code indices of a training forward pass under bf16 autocast equal float32's on
   a fixed batch of test images (they must: the lookup switches autocast off);
2. training speed in img/s for bf16 autocast on/off and torch.compile on/off, each measured
   after a few warm-up steps in the same process (the first row is the baseline of the ratios);
3. the gpu preset run to its end: wall time, img/s, and the training time at which the test
   NMSE first reaches 0.056 (evaluated every `--eval-every` steps), the final test metrics;
4. the peak GPU memory.

On a CPU the bf16 rows equal the float32 ones by design (the loop enables autocast only on
GPUs with native bf16), and the check is only a dry run of the script.
"""

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from vqvae_lite.codebook import nearest_codes
from vqvae_lite.codebook_upkeep import DEFAULT_MODELS
from vqvae_lite.data import load_cifar10
from vqvae_lite.devices import hardware, resolve_device
from vqvae_lite.loop import training_step
from vqvae_lite.metrics import format_metrics
from vqvae_lite.run_state import Run
from vqvae_lite.train import PRESETS, VQVAETask, train
from vqvae_lite.training_scale import to_training_scale

TARGET_NMSE = 0.056  # the Sonnet example's running mean after 10,000 updates of batch 32
RESULTS = Path(__file__).resolve().parent / "results"


def bf16_indices_match(splits, device: torch.device) -> str:
    """Forward a fixed batch in training mode under bf16 autocast and in float32."""
    task = VQVAETask(DEFAULT_MODELS["gpu"], replace(PRESETS["gpu"], device=str(device)), splits)
    with torch.no_grad():  # codes at encoder outputs, so that many codes compete
        task.model.quantizer.codebook.copy_(task.sample_encodings(64)[:512])
        x = to_training_scale(splits.test[:512].to(device))
        x = x.contiguous(memory_format=torch.channels_last)
        task.model.eval()
        exact = task.model(x).indices
        with torch.autocast(device.type, dtype=torch.bfloat16):
            mixed = task.model(x)
    z = mixed.z_e.float().permute(0, 2, 3, 1).reshape(-1, mixed.z_e.shape[1])
    own = nearest_codes(z, task.model.quantizer.codebook).view_as(mixed.indices)
    return (
        f"bf16 autocast: z_e {mixed.z_e.dtype}, indices equal float32 lookup of the same z_e: "
        f"{torch.equal(own, mixed.indices)}; equal the float32 model's indices at "
        f"{(exact == mixed.indices).float().mean().item():.2%} of positions (z_e itself is "
        "rounded to bf16)"
    )


def images_per_second(splits, device, amp: bool, compile: bool, steps: int) -> float:
    config = replace(PRESETS["gpu"], device=str(device), amp=amp, compile=compile)
    task = VQVAETask(DEFAULT_MODELS["gpu"], config, splits)
    run = Run(task, config, torch.optim.Adam(task.model.parameters(), lr=1e-4))
    for _ in range(3):  # warm-up (and compilation)
        training_step(run, next(task.batches), device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        training_step(run, next(task.batches), device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * config.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=PRESETS["gpu"].steps)
    parser.add_argument("--speed-steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    parser.add_argument("--data", help="image folder or .tar.gz (default: as load_cifar10)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    lines = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    splits = load_cifar10(args.data)
    report(f"{hardware(device)}; torch {torch.__version__}; {splits.source}")
    report(bf16_indices_match(splits, device))

    rows = [(amp, compiled) for compiled in (False, True) for amp in (False, True)]
    rows = [row for row in rows if not (args.no_compile and row[1])]
    speeds = {row: images_per_second(splits, device, *row, args.speed_steps) for row in rows}
    baseline = speeds[(False, False)]
    report(f"\nspeed, {args.speed_steps} steps of {PRESETS['gpu'].batch_size} after 3 warm-up:")
    for (amp, compiled), rate in speeds.items():
        report(
            f"  bf16 {'on ' if amp else 'off'} | compile {'on ' if compiled else 'off'} | "
            f"{rate:8.0f} img/s | x{rate / baseline:.2f}"
        )

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    config = replace(
        PRESETS["gpu"],
        device=str(device),
        steps=args.steps,
        eval_every=args.eval_every,
        warmup_steps=min(100, args.steps // 5 + 1),
    )
    result = train(DEFAULT_MODELS["gpu"], config, splits)
    reached = [r for r in result.history if "test" in r and r["test"]["nmse"] <= TARGET_NMSE]
    report(
        f"\ngpu preset: {result.steps} steps of {config.batch_size} in "
        f"{result.wall_time_s:.1f} s ({result.steps * config.batch_size / result.wall_time_s:.0f}"
        f" img/s, evaluations every {args.eval_every} steps included)"
    )
    if reached:
        report(
            f"test NMSE <= {TARGET_NMSE} first at step {reached[0]['step']}, "
            f"after {reached[0]['elapsed_s']:.1f} s of training"
        )
    else:
        report(f"test NMSE <= {TARGET_NMSE} not reached at any evaluation")
    report(f"final test ({len(splits.test)} images): {format_metrics(result.test)}")
    if device.type == "cuda":
        report(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"gpu_check_{device.type}.txt"
    path.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {path.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
