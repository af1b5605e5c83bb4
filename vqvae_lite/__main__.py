# Generated from notebooks/11_several_gpus.ipynb by tools/export.py: edit the notebook.
"""`python -m vqvae_lite`: the command line of `vqvae_lite.cli`, on one process or, under
torchrun, on every process it started (`vqvae_lite.distributed`, appendix 11)."""

import sys

from vqvae_lite.distributed import main

if __name__ == "__main__" and "ipykernel" not in sys.modules:
    sys.exit(main())
