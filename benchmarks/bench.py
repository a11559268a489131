"""Performance table of cnnlab's trainer against plain Keras (and PyTorch), written as JSON too.

The same as `cnnlab bench`; usage:
    .venv/bin/python benchmarks/bench.py [--quick] [--repeats 3] [--json bench.json] [--run DIR]
"""

from __future__ import annotations

import sys

from cnnlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
