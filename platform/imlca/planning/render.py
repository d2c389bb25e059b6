"""The plan as text (a table per worker type, the chosen one, warnings) and as JSON for tools."""
from __future__ import annotations

from imlca.planning.memory import describe
from imlca.planning.plan import Plan, TypePlan, describe_resources
from imlca.planning.workload import Workload


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def work_lines(work: Workload, trial_resources: dict[str, float]) -> list[str]:
    """What the sweep holds, counted without any measured figure: trials, epochs, images, fine-tunings."""
    cfg = work.sweep.cfg
    trials = work.trials
    first = trials[0]
    benches = sorted({t.cfg.data.benchmark for t in trials})
    lines = [f"sweep {work.sweep.name}: {len(trials)} trial(s), at most {cfg.max_concurrent_trials} at once"]
    for name in benches:
        t = next(t for t in trials if t.cfg.data.benchmark == name)
        per_task = "/".join(str(task.train) for task in t.tasks)
        lines.append(f"  {name}: {len(t.tasks)} tasks, {t.cfg.train.epochs} epoch(s); training images per task "
                     f"{per_task} ({t.train_images} per epoch, counted from the {t.counts_from})")
    fine = work.trajectories if cfg.cached else len(trials)
    aligned = sum(t.alignments * (len(t.tasks) - 1) for t in trials)
    distinct = len({t.trajectory for t in trials})
    lines.append(f"  fine-tunings: {fine}; alignments: {aligned}" + (
        f" (trials share {distinct} trajectory(ies); {distinct - work.trajectories} already in the cache)"
        if cfg.cached else ""))
    lines.append(f"  a trial holds {describe_resources(trial_resources)}; backbone {first.cfg.model.backbone} "
                 f"at {first.cfg.data.image_size} px, {first.cfg.train.precision}")
    return lines


def type_row(tp: TypePlan) -> str:
    if tp.per_node == 0:
        return f"{tp.worker.name:14s} {'does not fit a trial':>40s}"
    if tp.wall_s is None and not tp.missing:
        return f"{tp.worker.name:14s} {tp.per_node:>8d} {tp.nodes:>5d} {tp.parallel:>8d}   max_workers 0: never started"
    if tp.wall_s is None:
        return f"{tp.worker.name:14s} {tp.per_node:>8d} {tp.nodes:>5d} {tp.parallel:>8d}   no figures: {tp.missing[0]}"
    return (f"{tp.worker.name:14s} {tp.per_node:>8d} {tp.nodes:>5d} {tp.parallel:>8d} {duration(tp.wall_s):>10s} "
            f"{tp.gpu_hours:>9.2f} {_money(tp.price):>10s}")


def text(plan: Plan) -> str:
    lines = work_lines(plan.work, plan.trial_resources)
    where = "a trial's alignments" if plan.work.sweep.cfg.cached else "a run's CentralActor"
    lines += [f"  memory of {where} on {name}: {describe(memory)}" for name, memory in plan.memory.items()]
    lines += [f"  {note}" for note in plan.notes]
    lines.append(f"cluster {plan.cluster.name}" + ("" if plan.cluster.local else
                                                   f" (max_workers {plan.cluster.max_workers})"))
    lines.append(f"{'worker type':14s} {'per node':>8s} {'nodes':>5s} {'at once':>8s} {'wall time':>10s} "
                 f"{'GPU-hours':>9s} {'price':>10s}")
    lines += [type_row(tp) for tp in plan.types]
    c = plan.chosen
    lines.append(f"chosen: {c.worker.name}: {duration(c.wall_s)} on {c.nodes} node(s), {c.node_hours:.2f} node-hours"
                 + (f", {_money(c.price)}" if c.price is not None else ", price unknown (--price TYPE=USD)"))
    parts = {k: sum(cost.parts[k] for cost in c.costs) for k in c.costs[0].parts}
    lines.append(f"  trial work on {c.device.name} ({c.device.threads} thread(s)), summed over trials: "
                 + ", ".join(f"{k} {duration(v)}" for k, v in parts.items())
                 + f"; start-up: sweep {duration(plan.sweep_fixed_s)}, per slot "
                 f"{duration(plan.slot_imports_s + c.costs[0].start_s)}")
    if not plan.cluster.local:
        lines.append("  not counted: node boot and image pull; the head node's hours")
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def as_json(plan: Plan) -> dict:
    def one(tp: TypePlan) -> dict:
        return {"worker_type": tp.worker.name, "resources": tp.worker.resources, "max_workers": tp.worker.max_workers,
                "price_per_hour": tp.worker.price, "per_node": tp.per_node, "nodes": tp.nodes,
                "parallel": tp.parallel, "wall_s": tp.wall_s, "node_hours": tp.node_hours, "gpu_hours": tp.gpu_hours,
                "price": tp.price, "missing": tp.missing,
                "device": None if tp.device is None else {"name": tp.device.name, "threads": tp.device.threads}}

    work = plan.work
    return {"sweep": work.sweep.name, "trials": len(work.trials), "fine_tunings": work.trajectories
            if work.sweep.cfg.cached else len(work.trials),
            "alignments": sum(t.alignments * (len(t.tasks) - 1) for t in work.trials),
            "train_images_per_epoch": [t.train_images for t in work.trials],
            "trial_resources": plan.trial_resources, "cluster": plan.cluster.name, "sweep_fixed_s": plan.sweep_fixed_s,
            "types": [one(tp) for tp in plan.types], "chosen": plan.chosen.worker.name, "wall_s": plan.chosen.wall_s,
            "memory": {name: {"peak_bytes": m.peak, "parts_bytes": m.parts} for name, m in plan.memory.items()},
            "warnings": plan.warnings, "families": plan.notes}
