"""Speed of the codebook lookup: vqvae-lite's chunked distances + index gather against
MishaLaskin/vqvae's one-hot lookup, in the same run. Prints the time per call of each and the
ratio (not a test).

    python benchmarks/lookup_speed.py [--repeats 20]

MishaLaskin/vqvae builds a (N, K) one-hot matrix with scatter_ and multiplies it by the codebook;
vqvae-lite indexes the codebook with the argmin (chapter 2). Both compute the same distances and
pick the same codes; the benchmark checks that before timing.
"""

import argparse
import time

import torch

from vqvae_lite.codebook import lookup, nearest_codes


def mishalaskin_lookup(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """MishaLaskin/vqvae's lookup: distances, argmin, one-hot (N, K), matmul with the codebook."""
    distances = (
        (z**2).sum(dim=1, keepdim=True) + (codebook**2).sum(dim=1) - 2 * z @ codebook.t()
    )  # (N, K)
    indices = distances.argmin(dim=1).unsqueeze(1)  # (N, 1)
    one_hot = torch.zeros(len(z), len(codebook)).scatter_(1, indices, 1)  # (N, K)
    return one_hot @ codebook  # (N, D)


def ours(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return lookup(nearest_codes(z, codebook), codebook)


def seconds_per_call(function, z, codebook, repeats: int) -> float:
    function(z, codebook)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        function(z, codebook)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{'N x K (D=64)':>16} {'one-hot':>14} {'vqvae-lite':>12} {'speed-up':>9}")
    for n, k in [(2048, 512), (32768, 512), (32768, 8192)]:
        z, codebook = torch.randn(n, 64), torch.randn(k, 64)
        assert torch.allclose(mishalaskin_lookup(z, codebook), ours(z, codebook))
        reference = seconds_per_call(mishalaskin_lookup, z, codebook, args.repeats)
        lite = seconds_per_call(ours, z, codebook, args.repeats)
        size = f"{n} x {k}"
        print(
            f"{size:>16} {reference * 1e3:>11.2f} ms {lite * 1e3:>9.2f} ms "
            f"{reference / lite:>8.2f}x"
        )


if __name__ == "__main__":
    main()
