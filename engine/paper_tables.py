"""The paper's tables: every row a config; our results matched to rows by what was trained.

Results are the JSONs ``eval.py --out`` writes. A result belongs to a row when the checkpoint's own
config equals the row's, without the keys that do not change the result (``INCIDENTAL``); results of
a row are grouped by protocol and averaged over seeds. Costs come from each row's config
(``models.complexity``, imported only where costs are computed, so listing the tables needs no
torch). The paper's numbers come from ``engine.paper_results``, with their sources.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.paper_results import (
    ADE20K_VAL_LATER,
    ADE20K_VAL_R101,
    CITYSCAPES_TEST_OTHERS,
    CITYSCAPES_TEST_R101,
    NOT_RECORDED,
    PASCAL_CONTEXT,
    PaperResult,
)
from utils import comparison
from utils.config import changed_keys, config_to_dict, load_config
from utils.paths import REPO_ROOT as ROOT
from utils.records import load_records, records_path

MULTI_SCALE = ["--scales", "0.5", "0.75", "1.0", "1.25", "1.5", "1.75"]  # + flip, the config's default


@dataclass(frozen=True)
class Row:
    name: str
    config: str  # relative to the repository
    paper: PaperResult | None = None
    paper_note: str = NOT_RECORDED  # why there is no paper number

    @property
    def id(self) -> str:
        return Path(self.config).stem


@dataclass(frozen=True)
class Table:
    title: str
    rows: tuple[Row, ...]
    flops_size: tuple[int, int]  # input size of the FLOPs column
    eval_flags: tuple[str, ...] = ()  # eval.py flags of the table's protocol (the config's eval section otherwise)
    split: str = "val"
    classes: tuple[str, ...] = ()  # per-class IoU columns
    note: str = ""
    context: tuple[PaperResult, ...] = ()  # other methods' numbers in the paper's table, for reference only


def _rows(pattern: str, names: dict[str, str] | None = None) -> tuple[Row, ...]:
    paths = sorted(ROOT.glob(pattern))
    return tuple(
        Row((names or {}).get(p.stem, p.stem), str(p.relative_to(ROOT)), paper_note="not in the paper") for p in paths
    )


TABLES: dict[str, Table] = {
    "ade20k_ablation": Table(
        "ADE20K val, ResNet-50: the ablation of the paper's Fig. 6",
        (
            Row("Base FCN", "configs/ade20k/ablations/r50_base_fcn.yaml"),
            Row("1 MPM only", "configs/ade20k/ablations/r50_mpm1.yaml"),
            Row("2 MPM only", "configs/ade20k/ablations/r50_mpm2.yaml"),
            Row("SPM only", "configs/ade20k/ablations/r50_spm_only.yaml"),
            Row("SPNet (SPM + 2 MPM)", "configs/ade20k/ablations/r50_spnet.yaml"),
        ),
        (512, 512),
        note="The Fig. 6 values and their test protocol are not recorded here; the commands use the config's "
        "protocol (the official SPNet test: single scale, sliding window, flip).",
    ),
    "ade20k_val": Table(
        "ADE20K val: SPNet",
        (
            Row("SPNet R50", "configs/ade20k/spnet_r50.yaml"),
            Row("SPNet R101", "configs/ade20k/spnet_r101.yaml", ADE20K_VAL_R101),
        ),
        (512, 512),
        tuple(MULTI_SCALE),
        note="The paper's test protocol is not recorded here; the commands use multi-scale (0.5-1.75) + flip, "
        "the usual test of this line of work. After the paper, the authors' README reported "
        + ", then ".join(r.value for r in ADE20K_VAL_LATER)
        + " for SPNet with its strips upsampled bilinearly.",
    ),
    "cityscapes_test": Table(
        "Cityscapes test, ResNet-101 (the paper's Table 6)",
        (
            Row("SPNet R101", "configs/cityscapes/spnet_r101.yaml", CITYSCAPES_TEST_R101),
            Row("PSPNet R101 (our recipe)", "configs/cityscapes/pspnet_r101.yaml", None, "not in Table 6"),
        ),
        (769, 769),
        tuple(MULTI_SCALE) + ("--format", "cityscapes-submission"),
        split="test",
        note="Test labels are not public: eval.py writes the submission (--save-pred); upload it to "
        'cityscapes-dataset.com and add the server\'s mIoU to the result JSON as "server_miou" (a fraction).',
        context=CITYSCAPES_TEST_OTHERS,
    ),
    "pascal_context": Table(
        "Pascal Context val (5105 images; 59 classes, background ignored): SPNet",
        (
            Row("SPNet R50", "configs/pascal_context/spnet_r50.yaml", paper_note="not in the paper"),
            Row("SPNet R101", "configs/pascal_context/spnet_r101.yaml", PASCAL_CONTEXT),
        ),
        (480, 480),
        tuple(MULTI_SCALE),
        note="54.5 is not read in the paper: benchmark listings give it, under both 'Pascal Context' and "
        "'PASCAL-Context 60 classes' (its 'test' is these 5105 val images, the usual test set); which class count "
        "it used is not recorded. The configs train and test with PyTorch-Encoding's pcontext recipe (59 classes, "
        "the paper's code base); data.dataset_args.num_classes=60 model.num_classes=60 counts background as a class.",
    ),
    "compare_heads": Table(
        "ADE20K val, ResNet-50 with SPM: the head changed, nothing else (configs/ade20k/compare)",
        _rows("configs/ade20k/compare/head_*.yaml"),
        (512, 512),
    ),
    "compare_attention": Table(
        "ADE20K val, ResNet-50 with the SP head: the block attention changed, nothing else (configs/ade20k/compare)",
        _rows("configs/ade20k/compare/attention_*.yaml"),
        (512, 512),
    ),
    "synthetic_ablation": Table(
        "Synthetic street world (CPU study): the Fig. 6 ablation on the demo's small backbone (configs/synthetic)",
        (
            Row("Base FCN", "configs/synthetic/base_fcn.yaml", paper_note="not in the paper (synthetic data)"),
            Row("1 MPM only", "configs/synthetic/mpm1.yaml", paper_note="not in the paper (synthetic data)"),
            Row("2 MPM only", "configs/synthetic/mpm2.yaml", paper_note="not in the paper (synthetic data)"),
            Row("SPM only", "configs/synthetic/spm_only.yaml", paper_note="not in the paper (synthetic data)"),
            Row("SPNet (SPM + 2 MPM)", "configs/synthetic/spnet.yaml", paper_note="not in the paper (synthetic data)"),
        ),
        (256, 512),
        classes=("pole", "traffic sign", "fence", "wall"),
        note="Run it with scripts/run_study.py (docs/paper_tables.md).",
    ),
}

# Keys that do not change what is trained (where files are, how often to log, speed switches), the
# seed (runs are grouped by it) and the eval section (the protocol is matched on its own).
INCIDENTAL = {
    "model": {"backbone": {"pretrained": None}},
    "data": {"root": None},
    "train": {
        k: None
        for k in (
            "work_dir",
            "device",
            "num_workers",
            "seed",
            "log_interval",
            "checkpoint_interval",
            "keep_checkpoints",
            "eval_interval",
            "eval_max_images",
            "eval_pictures",
            "eval_protocol",
            "deterministic",
            "amp",
            "channels_last",
            "fast",
            "compile",
            "per_device_batch",
            "load_from",
        )
    },  # fmt: skip
    "eval": None,
}


def recipe(config: dict[str, Any], incidental: dict | None = INCIDENTAL) -> dict[str, Any]:
    """``config`` without the incidental keys: two runs of one row have equal recipes."""
    out = {}
    for key, value in config.items():
        sub = incidental.get(key, "keep") if incidental else "keep"
        if sub is None:
            continue
        out[key] = recipe(value, sub) if isinstance(value, dict) and isinstance(sub, dict) else value
    return out


@dataclass
class Result:
    path: Path
    seed: int
    protocol: str
    miou: float | None
    pixel_accuracy: float | None
    per_class: dict[str, float | None]
    recipe: dict[str, Any]


def read_results(runs: Path) -> list[Result]:
    """Every eval.py result JSON under ``runs`` (other JSON files are skipped)."""
    results = []
    for path in sorted(runs.rglob("*.json")) if runs.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "config" not in data or "protocol" not in data:
            continue
        trained = data.get("train_config") or data["config"]  # the checkpoint's own config, when it has one
        scored = data.get("scored", True)
        miou = data.get("miou") if scored else data.get("server_miou")
        results.append(
            Result(
                path=path,
                seed=int(trained.get("train", {}).get("seed", 0)),
                protocol=data.get("protocol_text") or json.dumps(data["protocol"], sort_keys=True),
                miou=miou,
                pixel_accuracy=data.get("pixel_accuracy") if scored else None,
                per_class=data.get("per_class_iou") or {},
                recipe=recipe({**data["config"], **trained}),
            )
        )
    return results


@dataclass
class Line:
    """One line of a table: a row measured under one protocol (or not run)."""

    row: Row
    protocol: str | None = None
    runs: list[Result] = field(default_factory=list)

    def stat(self, get) -> tuple[float, float | None, int] | None:
        values = [get(r) for r in self.runs if get(r) is not None]
        if not values:
            return None
        mean = statistics.fmean(values)
        return 100 * mean, 100 * statistics.stdev(values) if len(values) > 1 else None, len(values)


def build_lines(table: Table, results: list[Result]) -> tuple[list[Line], list[tuple[Result, str]]]:
    """Lines of ``table``, and the results that match none of its rows (with the nearest row's differences)."""
    recipes = {row.id: recipe(config_to_dict(load_config(ROOT / row.config))) for row in table.rows}
    lines, matched = [], set()
    for row in table.rows:
        mine = [r for r in results if not changed_keys(recipes[row.id], r.recipe)]  # absent = None
        matched.update(id(r) for r in mine)
        protocols = sorted({r.protocol for r in mine})
        if not protocols:
            lines.append(Line(row))
        for protocol in protocols:
            newest: dict[int, Result] = {}  # one result per seed: the newest file
            for r in sorted((r for r in mine if r.protocol == protocol), key=lambda r: r.path.stat().st_mtime):
                newest[r.seed] = r
            lines.append(Line(row, protocol, [newest[s] for s in sorted(newest)]))
    unmatched = []
    for r in results:
        if id(r) not in matched:
            nearest = min(recipes, key=lambda k: len(changed_keys(recipes[k], r.recipe)))
            unmatched.append(
                (r, f"nearest row {nearest}: differs in {', '.join(changed_keys(recipes[nearest], r.recipe))}")
            )
    return lines, unmatched


def costs(table: Table) -> dict[str, dict]:
    """Inference parameters and FLOPs of every row, from its config (meta device)."""
    from models.complexity import model_info  # torch: only where costs are computed

    out = {}
    for row in table.rows:
        info = model_info(load_config(ROOT / row.config, ["model.backbone.pretrained=null"]), table.flops_size)
        out[row.id] = {"parameters": info["parameters"]["inference"], "flops": info["flops"]}
    return out


WORK_DIRS = "work_dirs/tables"  # where the commands put each run's checkpoints and logs


def work_dir(table_name: str, row: Row, seed: int, root: str = WORK_DIRS) -> str:
    return f"{root}/{table_name}/{row.id}/seed{seed}"


def result_path(table_name: str, row: Row, seed: int, runs: Path) -> Path:
    return runs / table_name / f"{row.id}_seed{seed}.json"


def train_args(table_name: str, row: Row, seed: int, root: str = WORK_DIRS) -> list[str]:
    """train.py's arguments for ``row`` and ``seed``; ``--resume auto``: a run a kill interrupted goes on,
    a finished one is left as it is (train.py refuses a fresh run in a work dir that holds one)."""
    folder = work_dir(table_name, row, seed, root)
    return ["--config", row.config, f"train.seed={seed}", f"train.work_dir={folder}", "--resume", "auto"]


def eval_args(table_name: str, row: Row, seed: int, runs: Path, root: str = WORK_DIRS) -> list[str]:
    """eval.py's arguments: the final model (last.pth, not the val-selected best.pth), the table's protocol."""
    table, folder = TABLES[table_name], work_dir(table_name, row, seed, root)
    args = [
        "--config",
        row.config,
        "--checkpoint",
        f"{folder}/last.pth",
        "--out",
        str(result_path(table_name, row, seed, runs)),
    ]
    if table.split != "val":
        args += ["--split", table.split, "--save-pred", f"{folder}/pred_{table.split}"]
    return args + list(table.eval_flags)


def commands(table_name: str, row: Row, seed: int, runs: Path) -> dict[str, list[str]]:
    """The train + eval commands that produce ``row`` for ``seed``: single node and SLURM."""
    train, evaluate = (
        train_args(table_name, row, seed),
        "python eval.py " + " ".join(eval_args(table_name, row, seed, runs)),
    )
    return {
        "single node": ["torchrun --standalone --nproc_per_node=4 train.py " + " ".join(train), evaluate],
        "slurm": [
            f"sbatch --nodes=1 --gpus-per-node=4 scripts/slurm_train.sh {' '.join(train[1:])}",
            f"# when the job has finished: {evaluate}",
        ],
    }


def _cell(stat: tuple[float, float | None, int] | None) -> str:
    if stat is None:
        return "not run"
    mean, std, _ = stat
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def confidence(lines: list[Line], level: float = 0.95, samples: int = 10000, seed: int = 0) -> dict[int, dict]:
    """Per line (its position) with records beside all its results: the mIoU interval (percent) and, for
    every line after the first such one (the baseline), the paired comparison with it
    (``utils/comparison.py``; over seeds, the hierarchical bootstrap)."""
    rows, positions = [], []
    for k, line in enumerate(lines):
        files = [records_path(r.path) for r in line.runs]
        if files and all(f.is_file() for f in files):
            rows.append(comparison.Row(line.row.name, tuple(load_records(f) for f in files)))
            positions.append(k)
    if not rows:
        return {}
    comparison.check_comparable(rows)
    result = comparison.compare(rows, level=level, samples=samples, seed=seed)
    out = {}
    for k, run in zip(positions, result["runs"]):
        entry = {"ci": [100 * x for x in run["ci"]], "level": level}
        if "versus_first" in run:
            v = run["versus_first"]
            entry["versus_first"] = {
                "baseline": rows[0].label, "difference": 100 * v["difference"], "ci": [100 * x for x in v["ci"]],
                "p": v["p"], "verdict": v["verdict"],
            }  # fmt: skip
        out[k] = entry
    return out


def _ci_cells(record: dict) -> list[str]:
    if "miou_ci" not in record:
        return ["no records", "-"] if record["n"] else ["-", "-"]
    lo, hi = record["miou_ci"]["ci"]
    versus = record["miou_ci"].get("versus_first")
    if versus is None:
        return [f"[{lo:.2f}, {hi:.2f}]", "baseline"]
    d, (dlo, dhi), p = versus["difference"], versus["ci"], versus["p"]
    p_text = "" if p is None else f", p {p:.4f}"
    return [f"[{lo:.2f}, {hi:.2f}]", f"{d:+.2f} [{dlo:+.2f}, {dhi:+.2f}]{p_text}: {versus['verdict']}"]


def table_records(table_name: str, runs: Path, ci: bool = False) -> tuple[list[dict], list[tuple[Result, str]]]:
    """One dict per line: the numbers of the table, ready for any format; ``ci``: with ``confidence``'s."""
    table = TABLES[table_name]
    lines, unmatched = build_lines(table, read_results(runs))
    intervals = confidence(lines) if ci else {}
    cost = costs(table)
    records = []
    for line in lines:
        miou, paper = line.stat(lambda r: r.miou), line.row.paper
        record = {
            "row": line.row.name,
            "config": line.row.config,
            "paper_miou": paper.number if paper else None,
            "paper_note": paper.source if paper else line.row.paper_note,
            "paper_text": paper.value if paper else None,
            "miou": miou,
            "pixel_accuracy": line.stat(lambda r: r.pixel_accuracy),
            "classes": {c: line.stat(lambda r, c=c: r.per_class.get(c)) for c in table.classes},
            "n": miou[2] if miou else 0,
            "seeds": [r.seed for r in line.runs],
            "protocol": line.protocol,
            "files": [str(r.path) for r in line.runs],
            "parameters": cost[line.row.id]["parameters"],
            "flops": cost[line.row.id]["flops"],
        }
        if not line.runs:
            record["commands"] = commands(table_name, line.row, 0, runs)
        if interval := intervals.get(len(records)):
            record["miou_ci"] = interval
        records.append(record)
    return records, unmatched


def render(table_name: str, runs: Path, fmt: str, ci: bool = False) -> str:
    table = TABLES[table_name]
    records, unmatched = table_records(table_name, runs, ci)
    if fmt == "json":
        return json.dumps({"table": table_name, "title": table.title, "rows": records}, indent=1)
    header = ["row", "paper mIoU", "mIoU", "n"] + (["mIoU 95% CI", "vs the first row"] if ci else [])
    header += ["pixel acc"] + [f"{c} IoU" for c in table.classes]
    header += ["protocol", "parameters", "GFLOPs"]
    body = []
    for r in records:
        paper = r["paper_note"] if r["paper_miou"] is None else r["paper_text"]
        cells = [r["row"], paper, _cell(r["miou"]), str(r["n"]), *(_ci_cells(r) if ci else [])]
        cells.append(_cell(r["pixel_accuracy"]))
        cells += [_cell(r["classes"][c]) for c in table.classes]
        cells += [r["protocol"] or "-", f"{r['parameters']:,}", f"{r['flops'] / 1e9:,.1f}"]
        body.append(cells)
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *body])
        return buffer.getvalue()
    size = "x".join(map(str, table.flops_size))
    lines = [f"### {table.title}", "", f"mIoU and per-class IoU in percent, mean ± std over n seeds; FLOPs at {size}."]
    if table.note:
        lines.append(table.note)
    if ci:
        lines.append(
            "Intervals: paired percentile bootstrap over images (over seeds, hierarchical), 10,000 samples, seed 0; "
            "p: paired permutation test against the first row with records (docs/evaluation.md)."
        )
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    sources = [f"{r['row']} {r['paper_text']}: {r['paper_note']}." for r in records if r["paper_text"]]
    if sources:
        lines += ["", "Where the paper mIoU comes from: " + " ".join(sources)]
    if table.context:
        lines += ["", "Other methods in the paper's table (their own recipes; reference only): "]
        lines.append(", ".join(f"{r.method} {r.value}" for r in table.context) + ".")
    missing = [r for r in records if "commands" in r]
    if missing:
        lines += ["", f"Not run yet ({len(missing)} rows); the commands that produce them (seed 0; more seeds: "
                  f"`--commands --seeds 0 1 2`):", ""]  # fmt: skip
        for r in missing:
            lines.append(f"- {r['row']}:")
            lines += [f"  `{c}`" for c in r["commands"]["single node"]]
    if unmatched:
        lines += ["", f"{len(unmatched)} result files under {runs} match no row:"]
        lines += [f"- {r.path}: {why}" for r, why in unmatched]
    return "\n".join(lines)


def budget(table_name: str, seeds: int, tflops: float) -> str:
    """What training a table costs: images, FLOPs (counted), GPU-hours at an *assumed* sustained throughput."""
    from models.complexity import model_info  # torch: only where costs are computed

    table, rows, total = TABLES[table_name], [], 0.0
    for row in table.rows:
        cfg = load_config(ROOT / row.config, ["model.backbone.pretrained=null"])
        crop = tuple(cfg.data.augment.crop_size)
        per_image = model_info(cfg, crop, train=True)["train_flops_per_image"]
        images = cfg.train.max_iters * cfg.train.batch_size
        flops = images * per_image * seeds
        total += flops
        rows.append(
            f"| {row.name} | {cfg.train.max_iters:,} x {cfg.train.batch_size} = {images:,} | {crop[0]}x{crop[1]} "
            f"| {per_image / 1e9:,.0f} | {flops / 1e18:.2f} | {flops / (tflops * 1e12) / 3600:,.0f} |"
        )
    return "\n".join(
        [
            f"| row ({seeds} seed{'s' if seeds > 1 else ''}) | iterations x batch = images | crop "
            f"| training GFLOPs per image | EFLOPs | GPU-hours at an assumed {tflops:g} TFLOP/s |",
            "|---|---:|---|---:|---:|---:|",
            *rows,
            f"| **{table_name}** | | | | **{total / 1e18:.2f}** | **{total / (tflops * 1e12) / 3600:,.0f}** |",
        ]
    )


def missing_commands(table_names: list[str], runs: Path, seeds: list[int]) -> str:
    out = []
    for name in table_names:
        table = TABLES[name]
        lines, _ = build_lines(table, read_results(runs))
        done = {(line.row.id, r.seed) for line in lines for r in line.runs}
        for row in table.rows:
            for seed in seeds:
                if (row.id, seed) in done:
                    continue
                for launcher, cmds in commands(name, row, seed, runs).items():
                    out.append(f"# {name} / {row.name} / seed {seed} ({launcher})")
                    out += cmds
    return "\n".join(out) if out else "every row has results for the requested seeds"
