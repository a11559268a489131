"""The runs under a runs folder: listed (`cnnlab runs`), the latest finished one found (what
`evaluate`, `predict`, `serve`, `visualize` and `export` use when no run is named), and two or
more compared (`cnnlab compare`). Everything here reads run folders through `cnnlab.runs.Run`
and writes nothing."""

from cnnlab.catalog.compare import Comparison, compare_runs, format_comparison
from cnnlab.catalog.listing import (
    RunSummary,
    find_runs,
    format_runs,
    latest_finished,
    looks_like_run,
    resolve_run,
    summarize,
)

__all__ = [
    "Comparison",
    "RunSummary",
    "compare_runs",
    "find_runs",
    "format_comparison",
    "format_runs",
    "latest_finished",
    "looks_like_run",
    "resolve_run",
    "summarize",
]
