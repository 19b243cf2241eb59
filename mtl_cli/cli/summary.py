"""The one-screen summary printed at the end of a run."""

from __future__ import annotations

import math


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"


def format_summary(summary: dict) -> str:
    obj = summary["objective"]
    lines = [
        f"Run directory: {summary['run_dir']}",
        f"Selected epoch {summary['selected_epoch']} of {summary['epochs']} "
        f"(monitor {obj['monitor']} = {_fmt(obj['value'])}), {summary['steps']} steps",
        "",
        f"{'task':<16}{'kind':<18}{'metric':<18}{'val':>10}{'test':>10}",
    ]
    for name, info in summary["tasks"].items():
        test = summary["test"][name]
        val = summary["val_selected"].get(name, {})
        metrics = [m for m in info["directions"]]
        for i, m in enumerate(metrics):
            arrow = "↑" if info["directions"][m] == "higher" else "↓"
            star = "*" if m == info["primary_metric"] else " "
            label = f"{m} {arrow}{star}"
            first = (name if i == 0 else "", info["kind"] if i == 0 else "")
            values = f"{_fmt(val.get(m)):>10}{_fmt(test.get(m)):>10}"
            lines.append(f"{first[0]:<16}{first[1]:<18}{label:<18}{values}")
    dm = summary.get("delta_m")
    if isinstance(dm, dict):  # baseline_dir: Δm against the single-task baselines
        label = "Δm % ↑"
        lines.append(
            f"{'all primary':<16}{'vs single-task':<18}{label:<18}{_fmt(dm.get('val')):>10}{_fmt(dm.get('test')):>10}"
        )
        skipped = dm.get("skipped") or []
        more = f"; {len(skipped)} metric(s) skipped (summary.json lists them)" if skipped else ""
        lines.append(f"  Δm: mean relative change of the primary tasks' metrics against {dm.get('baseline_dir')}{more}")
    lines += [
        "",
        f"* primary metric   time/step {summary['time_per_step_s'] * 1000:.1f} ms   "
        f"wall {summary['wall_time_s']:.1f} s   "
        f"peak memory {summary['peak_memory_mb']:.0f} MB ({summary['peak_memory_kind']})",
    ]
    return "\n".join(lines)
