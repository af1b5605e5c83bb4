# Generated from notebooks/10_command_line.ipynb by tools/export.py: edit the notebook.
"""`python -m vqvae_lite`: the command line of `vqvae_lite.cli`."""

import sys

from vqvae_lite.cli import main

if __name__ == "__main__" and "ipykernel" not in sys.modules:  # not when run in a notebook
    sys.exit(main())
