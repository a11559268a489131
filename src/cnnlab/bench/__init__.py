"""`cnnlab bench`: cnnlab's trainer against plain Keras and PyTorch, inference, memory, start-up.

    results = run_bench(quick=True)    # a dict, JSON-ready
    print(format_table(results))
    write_json(results, "bench.json")

Heavy imports happen in the measuring child processes only, so this package imports fast.
"""

from cnnlab.bench.report import format_table
from cnnlab.bench.runner import BenchError, Settings, machine_info, run_bench, write_json

__all__ = ["BenchError", "Settings", "format_table", "machine_info", "run_bench", "write_json"]
