"""engine/paper_tables.py and scripts/paper_tables.py: rows, costs and commands from configs; results matched
by recipe and protocol, averaged over seeds; never a number where nothing was run or recorded."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from engine import paper_results, paper_tables
from engine.paper_tables import TABLES, Row, Table
from models.complexity import model_info
from utils.config import changed_keys, config_to_dict, load_config

OFFICIAL_ABLATION = {  # the official model's parameter counts (instantiated), R50, 150 classes, without the aux head
    "Base FCN": 33_146_966,
    "1 MPM only": 34_925_142,
    "2 MPM only": 39_322_710,
    "SPM only": 39_264_022,
    "SPNet (SPM + 2 MPM)": 39_322_710 + 6_117_056,
}


def test_every_table_row_is_a_shipped_config():
    for name, table in TABLES.items():
        assert table.rows, name
        for row in table.rows:
            assert (ROOT / row.config).is_file(), row.config
            load_config(ROOT / row.config)


def test_empty_runs_print_every_row_with_costs_and_commands(tmp_path):
    """The issue's command on an empty folder: every row, parameters / FLOPs as model_info.py, the commands."""
    result = subprocess.run(
        [sys.executable, "scripts/paper_tables.py", "--table", "ade20k_ablation", "--runs", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = result.stdout
    records, unmatched = paper_tables.table_records("ade20k_ablation", tmp_path)
    assert unmatched == [] and [r["row"] for r in records] == list(OFFICIAL_ABLATION)
    for record in records:
        info = model_info(load_config(ROOT / record["config"], ["model.backbone.pretrained=null"]), (512, 512))
        assert record["parameters"] == info["parameters"]["inference"] == OFFICIAL_ABLATION[record["row"]]
        assert record["flops"] == info["flops"]
        # a row that was not run carries no number of ours, anywhere
        assert record["miou"] is None and record["pixel_accuracy"] is None and record["n"] == 0
        line = next(line for line in out.splitlines() if line.startswith(f"| {record['row']} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == paper_results.NOT_RECORDED  # never an invented number
        assert cells[2:5] == ["not run", "0", "not run"] and cells[5] == "-"
        assert cells[6] == f"{info['parameters']['inference']:,}" and cells[7] == f"{info['flops'] / 1e9:,.1f}"
        train, evaluate = record["commands"]["single node"]
        assert f"train.py --config {record['config']} train.seed=0" in train
        assert f"eval.py --config {record['config']} --checkpoint" in evaluate and f"--out {tmp_path}" in evaluate
        assert train in out and evaluate in out


def test_paper_numbers_are_the_recorded_ones_with_their_source(tmp_path):
    records, _ = paper_tables.table_records("ade20k_val", tmp_path)
    assert [(r["row"], r["paper_miou"]) for r in records] == [("SPNet R50", None), ("SPNet R101", 45.60)]
    assert records[0]["paper_note"] == paper_results.NOT_RECORDED and records[1]["paper_text"] == "45.60"
    assert records[1]["paper_note"].startswith("SPNet paper (Hou et al., CVPR 2020, arXiv:2003.13328)")
    records, _ = paper_tables.table_records("cityscapes_test", tmp_path)
    assert [(r["row"], r["paper_miou"]) for r in records] == [("SPNet R101", 82.0), ("PSPNet R101 (our recipe)", None)]
    assert records[0]["paper_note"] == "SPNet paper (Hou et al., CVPR 2020, arXiv:2003.13328), Table 6"
    assert all(r["paper_miou"] is None for name in ("compare_heads", "compare_attention", "synthetic_ablation")
               for r in paper_tables.table_records(name, tmp_path)[0])  # fmt: skip
    markdown = paper_tables.render("cityscapes_test", tmp_path, "markdown")
    assert "Where the paper mIoU comes from: SPNet R101 82.0: SPNet paper (Hou et al., CVPR 2020, " in markdown
    assert "DANet 81.5, CCNet 81.4, APNB 81.3, SPGNet 81.1, DenseASPP 80.6, PSANet 80.1, DUC-HDC 80.1, " in markdown


def test_every_recorded_number_is_listed_in_the_docs():
    """docs/paper_tables.md, "The paper's numbers", has a line per number the repository records."""
    docs = (ROOT / "docs/paper_tables.md").read_text()
    section = docs[docs.index("## The paper's numbers") :].split("\n## ")[0]
    for r in paper_results.ALL:
        assert r.source, r
        assert f"| {r.method} | {r.dataset} {r.split} | {r.backbone or 'not stated'} | {r.value} |" in section, r


def test_listing_the_tables_imports_no_torch():
    """``--list`` prints the tables from their definitions: no model is built, torch is not even imported."""
    code = (
        "import runpy, sys\n"
        "sys.path.insert(0, 'scripts')\n"  # as `python scripts/paper_tables.py` does
        "sys.argv = ['scripts/paper_tables.py', '--list']\n"
        "try:\n"
        "    runpy.run_path('scripts/paper_tables.py', run_name='__main__')\n"
        "except SystemExit as exit_:\n"
        "    assert exit_.code == 0, exit_.code\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    lines = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert lines[-1] == "torch imported: False"
    assert [line.split()[0] for line in lines[:-1]] == [
        "ade20k_ablation", "ade20k_val", "cityscapes_test", "pascal_context", "compare_heads", "compare_attention",
        "synthetic_ablation",
    ]  # fmt: skip


def test_commands_for_every_missing_row_and_seed(tmp_path):
    text = paper_tables.missing_commands(["ade20k_val"], tmp_path, [0, 1])
    assert text.count("(single node)") == 4 and text.count("(slurm)") == 4
    assert (
        "sbatch --nodes=1 --gpus-per-node=4 scripts/slurm_train.sh configs/ade20k/spnet_r101.yaml train.seed=1" in text
    )
    assert "--scales 0.5 0.75 1.0 1.25 1.5 1.75" in text  # the table's protocol


def test_recipe_ignores_incidental_keys_only():
    base = config_to_dict(load_config(ROOT / "configs/demo.yaml"))
    incidental = config_to_dict(
        load_config(
            ROOT / "configs/demo.yaml",
            ["train.seed=3", "train.work_dir=/x", "data.root=/y", "train.num_workers=0", "eval.mode=whole"],
        )
    )
    different = config_to_dict(load_config(ROOT / "configs/demo.yaml", ["train.max_iters=7"]))
    assert paper_tables.recipe(base) == paper_tables.recipe(incidental)
    assert changed_keys(paper_tables.recipe(base), paper_tables.recipe(different)) == ["train.max_iters"]


def test_a_result_written_before_a_key_existed_matches_while_the_key_is_off(tmp_path):
    """Results keep matching their row when the schema gains a key that is None by default (e.g.
    loss.terms): the result's config lacks it, the row's has it at None."""
    row = paper_tables.TABLES["synthetic_ablation"].rows[0]
    config = config_to_dict(load_config(ROOT / row.config))
    assert config["loss"]["terms"] is None and config["train"]["class_map"] is None
    older = {**config, "loss": {k: v for k, v in config["loss"].items() if k != "terms"}}
    older["train"] = {k: v for k, v in config["train"].items() if k != "class_map"}
    newer = {**config, "loss": {**config["loss"], "terms": [{"name": "dice", "weight": 1.0}]}}
    for name, trained in {"older": older, "newer": newer}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"config": trained, "protocol": {"mode": "whole"}}))
    results = paper_tables.read_results(tmp_path)
    lines, unmatched = paper_tables.build_lines(paper_tables.TABLES["synthetic_ablation"], results)
    assert [r.path.name for r in lines[0].runs] == ["older.json"]
    expected = [("newer.json", "nearest row base_fcn: differs in loss.terms")]
    assert [(r.path.name, why) for r, why in unmatched] == expected


TINY = [  # a small model on 64x128 synthetic images, 2 iterations
    "model.backbone.depth=50",
    "model.backbone.stage_blocks=[1, 1, 1, 2]",
    "model.backbone.base_width=8",
    "model.backbone.multi_grid=[1, 2]",
    "data.augment.crop_size=[64, 128]",
    "train.batch_size=2",
    "train.num_workers=0",
    "train.max_iters=2",
    "train.eval_max_images=1",
    "eval.mode=whole",
]


@pytest.mark.slow
def test_runs_are_matched_by_recipe_and_protocol_and_averaged_over_seeds(synthetic_cityscapes, tmp_path, monkeypatch):
    """Real eval.py JSONs of tiny trainings: two seeds of one row, one of another, one other protocol, one
    other recipe."""
    import eval as eval_script
    import train

    rows = {"spnet": _row_config(tmp_path / "spnet.yaml", []),
            "fcn": _row_config(tmp_path / "fcn.yaml", ["model.head=fcn", "model.backbone.attention=null"])}  # fmt: skip
    table = Table("test", (Row("SPNet", str(rows["spnet"])), Row("FCN", str(rows["fcn"]))), (64, 128))
    monkeypatch.setitem(TABLES, "test", table)
    runs = tmp_path / "runs"

    def trained(name: str, seed: int, *extra: str) -> str:
        work = tmp_path / "work" / f"{name}{seed}{''.join(extra)}"
        args = ["--config", str(rows[name]), f"data.root={synthetic_cityscapes}", f"train.work_dir={work}"]
        assert train.main([*args, f"train.seed={seed}", *extra]) == 0
        return str(work / "last.pth")

    def evaluated(checkpoint: str, name: str, out: str, *flags: str) -> None:
        args = ["--config", str(rows[name]), "--checkpoint", checkpoint, f"data.root={synthetic_cityscapes}"]
        assert eval_script.main([*args, "--out", str(runs / out), *flags]) == 0

    a0, a1, b0 = trained("spnet", 0), trained("spnet", 1), trained("fcn", 0)
    evaluated(a0, "spnet", "a/spnet_s0.json")
    evaluated(a1, "spnet", "b/deeper/spnet_s1.json")  # anywhere under --runs
    evaluated(b0, "fcn", "fcn_s0.json")
    evaluated(a0, "spnet", "spnet_s0_noflip.json", "--no-flip")  # same run, another protocol: its own line
    evaluated(trained("spnet", 0, "train.max_iters=3"), "spnet", "longer.json")  # another recipe: no row
    (runs / "notes.json").write_text("{}")  # not a result: ignored

    records, unmatched = paper_tables.table_records("test", runs)
    by_key = {(r["row"], r["protocol"].endswith(", flip")): r for r in records}
    assert len(records) == 3
    spnet = by_key[("SPNet", True)]
    mious = [json.loads((runs / p).read_text())["miou"] for p in ("a/spnet_s0.json", "b/deeper/spnet_s1.json")]
    mean, std, n = spnet["miou"]
    assert n == 2 and spnet["seeds"] == [0, 1]
    assert mean == pytest.approx(100 * statistics.fmean(mious)) and std == pytest.approx(100 * statistics.stdev(mious))
    fcn = by_key[("FCN", True)]
    assert (
        fcn["n"] == 1
        and fcn["miou"][1] is None
        and fcn["miou"][0] == pytest.approx(100 * json.loads((runs / "fcn_s0.json").read_text())["miou"])
    )
    unflipped = by_key[("SPNet", False)]
    assert unflipped["n"] == 1 and unflipped["protocol"].endswith(", no flip")
    assert [(r.path.name, why) for r, why in unmatched] == [
        ("longer.json", "nearest row spnet: differs in train.max_iters")
    ]
    markdown = paper_tables.render("test", runs, "markdown")
    assert f"| SPNet | {paper_results.NOT_RECORDED} | {mean:.2f} ± {std:.2f} | 2 |" in markdown
    assert "longer.json: nearest row spnet: differs in train.max_iters" in markdown
    rows_json = json.loads(paper_tables.render("test", runs, "json"))["rows"]
    assert [r["n"] for r in rows_json] == [r["n"] for r in records]
    csv_lines = paper_tables.render("test", runs, "csv").splitlines()
    assert csv_lines[0].startswith("row,paper mIoU,mIoU,n") and len(csv_lines) == 4

    # --ci: every line's interval and its comparison with the first line, as compare_runs.py computes them
    from utils.comparison import compare, load_rows

    with_ci, _ = paper_tables.table_records("test", runs, ci=True)
    first, second = (str(runs / "a/spnet_s0.json"), str(runs / "b/deeper/spnet_s1.json")), str(runs / "fcn_s0.json")
    assert [r["row"] for r in with_ci] == ["SPNet", "SPNet", "FCN"] and with_ci[0]["files"] == list(first)
    arguments = [",".join(first), str(runs / "spnet_s0_noflip.json"), second]
    expected = compare(load_rows(arguments, ["SPNet", "SPNet", "FCN"]))["runs"]
    assert with_ci[0]["miou_ci"]["ci"] == [100 * x for x in expected[0]["ci"]]
    assert "versus_first" not in with_ci[0]["miou_ci"]
    versus = with_ci[2]["miou_ci"]["versus_first"]
    assert versus["ci"] == [100 * x for x in expected[2]["versus_first"]["ci"]] and versus["baseline"] == "SPNet"
    assert versus["p"] is None  # 1 seed against 2: no seed-by-seed pairing, the interval decides
    assert versus["verdict"] == expected[2]["versus_first"]["verdict"]
    table = paper_tables.render("test", runs, "markdown", ci=True)
    lo, hi = with_ci[0]["miou_ci"]["ci"]
    assert f"| 2 | [{lo:.2f}, {hi:.2f}] | baseline |" in table and "| mIoU 95% CI | vs the first row |" in table


def _row_config(path, extra: list[str]):
    """A row's config: the demo config with TINY and ``extra`` written in (they are its recipe)."""
    tree: dict = {"_base_": str(ROOT / "configs/demo.yaml")}
    for override in [*TINY, *extra]:
        key, value = override.split("=", 1)
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(tree))
    return path


def test_budget_counts_images_times_training_flops():
    text = paper_tables.budget("cityscapes_test", seeds=3, tflops=50.0)
    cfg = load_config(ROOT / "configs/cityscapes/spnet_r101.yaml", ["model.backbone.pretrained=null"])
    per_image = model_info(cfg, (768, 768), train=True)["train_flops_per_image"]
    images = cfg.train.max_iters * cfg.train.batch_size
    row = next(line for line in text.splitlines() if line.startswith("| SPNet R101 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{cfg.train.max_iters:,} x {cfg.train.batch_size} = {images:,}"
    assert cells[3] == f"{per_image / 1e9:,.0f}" and cells[4] == f"{3 * images * per_image / 1e18:.2f}"
    assert cells[5] == f"{3 * images * per_image / 50e12 / 3600:,.0f}"
    assert "| row (3 seeds) |" in text
