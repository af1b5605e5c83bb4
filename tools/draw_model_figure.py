"""Draw the landing page's figure: the whole VQ-VAE with the tensor shape at every stage.

    python tools/draw_model_figure.py            # writes book/figures/model.svg

The shapes are those of the book's model (MishaLaskin/vqvae's sizes) for a batch of 32 CIFAR-10
images (h = 128, D = 64, K = 512).
The output is deterministic (fixed SVG ids, no date), so re-running it changes no byte unless
this script changed.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "book" / "figures" / "model.svg"

ENCODER = "#dbe9f6"  # blue: chapters 1 and the pre-quantisation conv
QUANTISER = "#fde5c8"  # orange: chapters 2 and 3
DECODER = "#dcefd8"  # green: chapter 5
DATA = "#eeeeee"  # grey: tensors that are data, not layers
EDGE = "#444444"
MONO = "DejaVu Sans Mono"


def box(ax, x, y, w, h, title, lines=(), colour=DATA, chapter=None):
    """A rounded box centred at (x, y): a bold title, then lines of smaller monospaced text.

    A line is a string (centred) or an (operation, shape) pair, set as two aligned columns.
    """
    patch = FancyBboxPatch(
        (x - w / 2, y - h / 2),
        w,
        h,
        boxstyle="round,pad=0.02,rounding_size=0.12",
        facecolor=colour,
        edgecolor=EDGE,
        linewidth=1.2,
    )
    ax.add_patch(patch)
    step = 0.3
    top = y + (len(lines) * step) / 2
    ax.text(x, top, title, ha="center", va="center", fontsize=11, fontweight="bold")
    for i, line in enumerate(lines, start=1):
        row = top - i * step
        if isinstance(line, str):
            ax.text(x, row, line, ha="center", va="center", fontsize=8.4, family=MONO)
        else:
            operation, shape = line
            ax.text(x - w / 2 + 0.15, row, operation, va="center", fontsize=8.4, family=MONO)
            ax.text(
                x + w / 2 - 0.15, row, shape, ha="right", va="center", fontsize=8.4, family=MONO
            )
    if chapter is not None:
        ax.text(
            x + w / 2,
            y + h / 2 + 0.05,
            f"chapter {chapter}",
            ha="right",
            va="bottom",
            fontsize=7.5,
            color="#555555",
            style="italic",
        )


def arrow(ax, start, end, **style):
    """An arrow from start to end."""
    props = dict(arrowstyle="-|>", color=EDGE, linewidth=1.3, shrinkA=0, shrinkB=0)
    props.update(style)
    ax.annotate("", xy=end, xytext=start, arrowprops=props)


def draw() -> plt.Figure:
    width, height = 11.6, 6.2
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")

    # Top row, left to right: image -> encoder -> 1x1 conv -> z_e.
    top, low, right = 4.9, 1.95, 9.85
    box(ax, 0.8, top, 1.5, 0.95, "input $x$", ["[32, 3, 32, 32]"], chapter=0)
    box(
        ax,
        3.75,
        top,
        3.7,
        1.6,
        "encoder",
        [
            ("Conv 4×4 /2, ReLU", "[32, 64, 16, 16]"),
            ("Conv 4×4 /2, ReLU", "[32, 128, 8, 8]"),
            ("Conv 3×3", "[32, 128, 8, 8]"),
            ("2 residual layers", "[32, 128, 8, 8]"),
        ],
        ENCODER,
        chapter=1,
    )
    box(ax, 6.8, top, 1.7, 0.95, "1×1 conv", ["128 → D = 64"], ENCODER)
    box(ax, right, top, 2.7, 0.95, "encoding $z_e$", ["[32, 64, 8, 8]"])
    arrow(ax, (1.55, top), (1.9, top))
    arrow(ax, (5.6, top), (5.95, top))
    arrow(ax, (7.65, top), (8.5, top))

    # Right column, downwards: flatten -> nearest code (fed by the codebook).
    box(ax, right, 3.45, 2.7, 0.75, "flatten", ["[2048, 64]"])
    box(
        ax,
        right,
        low,
        2.7,
        1.05,
        "nearest code",
        ["‖z‖² + ‖e‖² − 2 z·e", "argmin → indices [2048]"],
        QUANTISER,
        chapter=2,
    )
    box(ax, right, 0.55, 2.7, 0.75, "codebook $e$", ["K = 512 codes  [512, 64]"], QUANTISER)
    arrow(ax, (right, top - 0.5), (right, 3.85))
    arrow(ax, (right, 3.05), (right, low + 0.55))
    arrow(ax, (right, 0.95), (right, low - 0.55))

    # Bottom row, right to left: z_q -> decoder -> reconstruction.
    box(ax, 6.8, low, 1.9, 1.05, "quantised $z_q$", ["e[indices]", "[32, 64, 8, 8]"], QUANTISER)
    box(
        ax,
        3.75,
        low,
        3.7,
        1.6,
        "decoder",
        [
            ("ConvT 3×3", "[32, 128, 8, 8]"),
            ("2 residual layers", "[32, 128, 8, 8]"),
            ("ConvT 4×4 /2, ReLU", "[32, 64, 16, 16]"),
            ("ConvT 4×4 /2", "[32, 3, 32, 32]"),
        ],
        DECODER,
        chapter=5,
    )
    box(ax, 0.8, low, 1.5, 0.95, r"output $\hat{x}$", ["[32, 3, 32, 32]"])
    arrow(ax, (right - 1.4, low), (7.8, low))
    arrow(ax, (5.85, low), (5.6, low))
    arrow(ax, (1.9, low), (1.55, low))

    # The straight-through gradient: backwards from z_q to z_e, around the argmin.
    red = "#c0504d"
    arrow(
        ax,
        (7.2, low + 0.58),
        (8.9, top - 0.52),
        linestyle=(0, (4, 3)),
        color=red,
        connectionstyle="arc3,rad=-0.3",
    )
    ax.text(
        7.15,
        3.45,
        "gradient copied straight through\n"
        r"$\partial L/\partial z_e \leftarrow \partial L/\partial z_q$   (chapter 3)",
        ha="right",
        va="center",
        fontsize=8.8,
        color=red,
    )

    # The loss, under the bottom row (chapter 4).
    ax.text(
        4.3,
        0.5,
        r"loss (chapter 4):  $\|x-\hat{x}\|^2/\mathrm{Var}(x)$"
        r"$\; + \;\|\mathrm{sg}[z_e]-e\|^2\; + \;\beta\,\|z_e-\mathrm{sg}[e]\|^2,\quad \beta=0.25$",
        ha="center",
        va="center",
        fontsize=10,
    )
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT, help="where to write the SVG")
    args = parser.parse_args()
    plt.rcParams["svg.hashsalt"] = "vqvae-lite"  # fixed element ids
    fig = draw()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, format="svg", bbox_inches="tight", metadata={"Date": None})
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
