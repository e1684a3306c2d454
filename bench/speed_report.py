"""The speed benchmark's results as a markdown table, in docs/benchmarks.md and docs/benchmarks.json.

``write_docs`` replaces only the block between the two markers in the markdown file (the hand-written text
around it stays) and stores the report as ``latest`` in the JSON file (its other keys stay).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

DOC_START, DOC_END = "<!-- speed.py results: start -->", "<!-- speed.py results: end -->"
SPEEDUP_LINE = "end-to-end speed-up vs MONAI: "


def _f(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _end_to_end_rows(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, e in report.get("end_to_end", {}).items():
        ours, theirs = e["ours"], e.get("monai")
        lines.append(f"| end to end, {e['label']} (s, median; runs {_runs(ours)}) | **{_f(ours['total'])}** | "
                     f"{_f(theirs['total']) if theirs else '-'} | **{_f(e.get('speedup_vs_monai'))}** |")
        if "monai_bf16" in e:
            lines.append(f"| end to end, {name}, MONAI with bf16 autocast too (s) | {_f(ours['total'])} | "
                         f"{_f(e['monai_bf16']['total'])} | {_f(e.get('speedup_vs_monai_bf16'))} |")
        stages = f"read {_f(ours['read'])}, segment {_f(ours['segment'])}, write {_f(ours['write'])}"
        monai_stages = (f"transforms {_f(theirs['preprocess'])}, inferer {_f(theirs['infer'])}, invert + post "
                        f"{_f(theirs['postprocess'])}, write {_f(theirs['write'])}") if theirs else "-"
        lines.append(f"| where the time goes, {name} (s, medians) | {stages} | {monai_stages} | |")
        if "mask_dice_ours_vs_monai" in e:
            lines.append(f"| masks, {name}: Dice ours vs MONAI | {e['mask_dice_ours_vs_monai']:.4f} | | |")
        if "reference_dice" in e:
            ref = e["reference_dice"]
            lines.append(f"| masks, {name}: Dice vs the manual label | {_f(ref.get('ours'), 4)} | "
                         f"{_f(ref.get('monai'), 4)} | |")
    return lines


def _runs(entry: dict[str, Any]) -> str:
    runs = entry.get("runs") or []
    return f"{min(runs):.2f}-{max(runs):.2f}" if runs else "-"


def _memory_rows(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, m in report.get("peak_ram_mb", {}).items():
        theirs = m.get("monai")
        lines.append(f"| peak RAM, {name} (MiB, VmHWM of a fresh process) | {m['ours']['peak_mb']:.0f} | "
                     f"{_f(theirs['peak_mb'], 0) if theirs else '-'} | "
                     f"{_f(theirs['peak_mb'] / m['ours']['peak_mb']) if theirs else ''} |")
        if "peak_gpu_mb" in m["ours"]:
            lines.append(f"| peak GPU memory, {name} (MiB) | {m['ours']['peak_gpu_mb']:.0f} | "
                         f"{_f(theirs.get('peak_gpu_mb'), 0) if theirs else '-'} | |")
    return lines


def _model_rows(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, t in report.get("model_only", {}).items():
        for label in ("fp32", "bf16"):
            if label in t:
                x = t[label]
                lines.append(
                    f"| model only, {name} {label}: {t['networks']} networks x {t['slices']} slices "
                    f"{t['network_input'][0]}x{t['network_input'][1]}x{t['network_input'][2]} | "
                    f"{x['seconds']:.3f} s ({x['slices_per_s']:.0f} slices/s, {x['gflops_per_s']:.0f} GFLOP/s) | "
                    f"compute bound {x['compute_bound_s']:.3f} s ({t['flops'] / 1e9:.0f} GFLOP) | "
                    f"{x['times_bound']:.1f}x the bound |")
    return lines


def _other_rows(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, f in report.get("fill", {}).items():
        runs = f"{min(f['runs']):.0f}-{max(f['runs']):.0f}"
        lines.append(f"| Fill from painted slices, {name} {f['size']}, 1 in {f['every_k']} liver slices painted "
                     f"({len(f['painted_slices'])} slices) (s, median; runs {runs}) | **{f['seconds']:.1f}** (Dice on "
                     f"the unpainted slices {f['dice_unpainted']:.4f}) | | |")
    for name, t in report.get("train", {}).items():
        painted = sum(t["annotated_slices"].values())
        lines.append(f"| Train from three painted scans ({name}, {painted} slices painted, 1 in {t['every_k']} liver "
                     f"slices), from the shipped model, {t['epochs']} epochs (s) | **{t['seconds']:.0f}** | | |")
    if "training" in report:
        t = report["training"]
        lines.append(f"| training throughput (slices/s, augmentation included; {t['seconds_per_epoch']:.1f} s per "
                     f"epoch) | {t['slices_per_s']:.1f} | | |")
    if "time_to_dice" in report:
        d = report["time_to_dice"]
        reached = _f(d["seconds"], 0) if d["seconds"] else "not reached"
        lines.append(f"| time to validation Dice {d['target']:.2f} (s) | {reached} (best {_f(d['best_dice'], 3)}) | | |")
    return lines


def format_table(report: dict[str, Any]) -> list[str]:
    """Markdown rows: end to end, agreement, peak RAM, the model alone against its compute bound, training."""
    header = ["| item | LiverUNet | MONAI (same ensemble) | MONAI / ours |", "|---|---|---|---|"]
    return header + _end_to_end_rows(report) + _memory_rows(report) + _model_rows(report) + _other_rows(report)


def speedup_line(report: dict[str, Any]) -> str:
    """The benchmark's last line: MONAI's end-to-end median over ours on the MRI."""
    ratio = report.get("end_to_end", {}).get("mri", {}).get("speedup_vs_monai")
    return SPEEDUP_LINE + (f"{ratio:.2f}" if ratio else "n/a (no MRI case, or MONAI skipped or not installed)")


def describe_run(report: dict[str, Any]) -> list[str]:
    """When, with which command, on which machine and models the report was measured."""
    m = report["machine"]
    models = "; ".join(f"{name}: {model['path']} ({model['networks']} networks, base {model['base_channels']}, "
                       f"{model['in_plane_spacing_mm']} mm in plane, {model['in_channels']} input slices)"
                       for name, model in report.get("models", {}).items())
    peaks = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in report.get("peak_flops_measured", {}).items())
    load = next(iter(report.get("end_to_end", {}).values()), {}).get("load_average_per_round") or []
    busy = f" 1-minute load average during the timed rounds {min(load):.1f}-{max(load):.1f}." if load else ""
    return [
        f"Measured {report['finished']} with `{report['command']}`.",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPU cores (torch threads {m['torch_threads']}), {m['memory_gib']} GiB "
        f"RAM, AVX-512-BF16 {'yes' if m['avx512_bf16'] else 'no'}, AMX-BF16 {'yes' if m['amx_bf16'] else 'no'}; GPU: "
        f"{m['gpu'] or 'none'}; Python {m['python']}, torch {m['torch']}, MONAI {m.get('monai', 'not installed')}; "
        f"load average at start {m.get('load_average_at_start')}.{busy}",
        f"Models: {models}. {report['repeats']}." + (f" Peak matmul measured: {peaks}." if peaks else ""),
    ]


def _replace_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a failed write leaves the old file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_json(report: dict[str, Any], path: Path) -> None:
    _replace_atomically(path, json.dumps(report, indent=1, default=str) + "\n")


def write_docs(report: dict[str, Any], markdown: Path, json_path: Path) -> None:
    """The results block of ``markdown`` replaced and the report stored as ``latest`` in ``json_path``."""
    stored: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(json_path.read_text())
        stored = loaded if isinstance(loaded, dict) else {}
    stored["latest"] = report
    write_json(stored, json_path)
    block = [DOC_START, *describe_run(report), "", *format_table(report), DOC_END]
    text = markdown.read_text() if markdown.exists() else "# Benchmarks\n\n" + DOC_START + "\n" + DOC_END + "\n"
    if DOC_START in text and DOC_END in text:
        head, rest = text.split(DOC_START, 1)
        text = head + "\n".join(block) + rest.split(DOC_END, 1)[1]
    else:
        text += "\n" + "\n".join(block) + "\n"
    _replace_atomically(markdown, text)
