"""What CPU this is and which of its instruction sets matter for training precision.

Read from /proc/cpuinfo (Linux, x86-64 and Arm) with `platform` as the fallback, so it needs no
extra package. The same answer decides `--precision auto` and is recorded in `run.json` and by
`cnnlab bench`, so a figure always says which CPU, and which instructions, it came from.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from typing import Any

CPUINFO = "/proc/cpuinfo"

# Instruction sets worth recording, in the order they are reported. bfloat16 arithmetic in
# hardware: x86 AMX (amx_bf16) and AVX-512 BF16; Arm's BF16 extension (Armv8.6, e.g.
# Neoverse V1/V2, Graviton3/4), shown as `bf16` in the Features line.
X86_SETS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2", "fma")
ARM_SETS = ("bf16", "i8mm", "sve2", "sve", "asimd")
BF16_SETS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})

# Arm Ltd's (implementer 0x41) part numbers for the server cores one meets in clouds.
_ARM_PARTS = {
    "0xd0c": "Neoverse N1",
    "0xd40": "Neoverse V1",
    "0xd49": "Neoverse N2",
    "0xd4f": "Neoverse V2",
    "0xd8e": "Neoverse N3",
    "0xd84": "Neoverse V3",
}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU model, its architecture and the instruction sets that matter here."""

    model: str
    machine: str
    instruction_sets: tuple[str, ...]

    @property
    def bfloat16(self) -> bool:
        """True where the CPU does bfloat16 arithmetic in hardware."""
        return bool(BF16_SETS & set(self.instruction_sets))

    def describe(self) -> str:
        """One line: the model and its instruction sets, e.g. for a table's header."""
        sets = ", ".join(self.instruction_sets) or "no AVX2/AVX-512/SVE found"
        return f"{self.model} ({self.machine}: {sets})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "instruction_sets": list(self.instruction_sets)}


def cpu_info(text: str | None = None) -> CpuInfo:
    """This machine's CPU, parsed from /proc/cpuinfo text (read here unless `text` is given)."""
    if text is None:
        try:
            with open(CPUINFO, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key not in fields:  # the first processor describes them all
            fields[key] = value.strip()
    # x86 lists its instruction sets under "flags", Arm under "Features".
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    is_arm = "features" in fields and "flags" not in fields
    machine = platform.machine() or ("aarch64" if is_arm else "unknown")
    if is_arm and machine == "x86_64":  # parsing another machine's text (tests)
        machine = "aarch64"
    wanted = ARM_SETS if is_arm else X86_SETS
    return CpuInfo(
        model=_model_name(fields, is_arm),
        machine=machine,
        instruction_sets=tuple(s for s in wanted if s in flags),
    )


def _model_name(fields: dict[str, str], is_arm: bool) -> str:
    if fields.get("model name"):
        return fields["model name"]
    if is_arm and fields.get("cpu part"):
        part = fields["cpu part"].lower()
        name = _ARM_PARTS.get(part) if fields.get("cpu implementer", "").lower() == "0x41" else None
        implementer = fields.get("cpu implementer", "?")
        return name or f"Arm CPU (implementer {implementer}, part {part})"
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_precision(info: CpuInfo | None = None) -> tuple[str, str]:
    """The precision a CPU trains fastest with, and why, in words for run.json and the log."""
    info = info or cpu_info()
    found = [s for s in info.instruction_sets if s in BF16_SETS]
    if found:
        return "mixed_bfloat16", f"CPU {info.model} has {', '.join(found)}"
    return "float32", f"CPU {info.model} has no bfloat16 instructions (amx_bf16, avx512_bf16, bf16)"
