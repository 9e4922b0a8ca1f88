"""Zero-shot evaluation with lm-evaluation-harness: the offline layouts, the config checks, the dense
cache, and the real SmolLM2 model on the offline benchmark sets (scores equal lm-eval's own)."""

import copy
import json
from pathlib import Path

import datasets
import lm_eval
import pytest
from conftest import compose_run
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks._yaml_loader import load_yaml
from test_cli import symprune
from test_config import plan_error

from symprune.evaluate import layouts
from symprune.evaluate.zeroshot import collect_scores
from symprune.run import runner
from symprune.run.loggers import NoLogger
from symprune.run.plan import plan_run
from symprune.run.runner import execute

STOCK_TASKS = Path(lm_eval.__file__).parent / "tasks"


# --- the converters of the offline files' layouts -------------------------------------------


def test_boolq_answer_becomes_the_hub_label():
    docs = datasets.Dataset.from_list([{"question": "is it", "answer": True}, {"question": "is it not", "answer": False}])
    assert layouts.boolq_answer(docs)["label"] == [1, 0]


def test_openbookqa_and_arc_files_get_the_hub_fields():
    published = datasets.Dataset.from_list([{
        "id": "7",
        "question": {"stem": "Fog is likely near", "choices": [{"text": "a marsh", "label": "A"}, {"text": "a desert", "label": "B"}]},
        "answerKey": "A",
    }])
    hub_choices = {"text": ["a marsh", "a desert"], "label": ["A", "B"]}
    assert layouts.openbookqa_nested(published)[0] == {
        "id": "7", "answerKey": "A", "question_stem": "Fog is likely near", "choices": hub_choices,
    }
    assert layouts.arc_nested(published)[0] == {"id": "7", "answerKey": "A", "question": "Fog is likely near", "choices": hub_choices}


def test_hellaswag_lines_become_lm_eval_documents():
    lines = [
        "Cooking: A man [title] cuts an onion. he", "2", "peels it.", "eats it.", "dices it.", "sings.",
        "Sports: A girl runs. she", "0", "jumps.", "sits [header] down.", "falls.", "waves.",
    ]
    docs = layouts.hellaswag_lines(datasets.Dataset.from_dict({"text": lines}))
    # lm-eval's own HellaSwag cleaning: " [title]" becomes ". ", other bracketed text is dropped
    assert docs[0] == {"query": "Cooking: A man. cuts an onion. he", "choices": ["peels it.", "eats it.", "dices it.", "sings."], "label": 2}
    assert docs[1]["choices"][1] == "sits down." and docs[1]["label"] == 0
    with pytest.raises(ValueError, match="6 lines per item; this one has 11"):
        layouts.hellaswag_lines(datasets.Dataset.from_dict({"text": lines[:-1]}))


def test_scores_and_means_are_lm_evals_numbers():
    results = {
        "results": {
            "piqa": {"acc,none": 0.7, "acc_stderr,none": 0.03, "acc_norm,none": 0.72, "acc_norm_stderr,none": 0.031},
            "rte": {"acc,none": 0.5, "acc_stderr,none": 0.05},
        },
        "n-samples": {"piqa": {"original": 1838, "effective": 200}, "rte": {"original": 277, "effective": 200}},
    }
    result = collect_scores(results, ["piqa", "rte"])
    assert result.scores["piqa"] == {"acc": 0.7, "acc_stderr": 0.03, "acc_norm": 0.72, "acc_norm_stderr": 0.031, "samples": 200}
    assert result.scores["rte"] == {"acc": 0.5, "acc_stderr": 0.05, "samples": 200}
    assert result.mean == {"acc": pytest.approx(0.6), "acc_norm": 0.72}  # acc_norm: over the tasks that report it


# --- every bad setting stops the plan (before any weights load) ------------------------------


def tiny(model_dir, assets, *overrides):
    return ("model=local", f"model.pretrained={model_dir}", "eval.perplexity.seqlen=128", f"paths.assets={assets}", *overrides)


def offline(model_dir, assets, *overrides):
    return tiny(model_dir, assets, "eval=zeroshot_offline", *overrides)


def test_offline_preset_plans_the_eight_local_tasks(tiny_model_dir, assets):
    suite = plan_run(compose_run(*offline(tiny_model_dir, assets))).zeroshot
    assert suite.tasks == ["piqa", "boolq", "rte", "winogrande", "openbookqa", "arc_easy", "arc_challenge", "hellaswag"]
    assert suite.local["rte"].files == {"validation": assets.resolve() / "rte" / "validation.parquet"}
    assert suite.local["arc_challenge"].layout == "arc_nested" and suite.local["piqa"].layout is None
    assert suite.local["arc_easy"].layout is None  # the hub's rows as they are
    assert plan_run(compose_run(*tiny(tiny_model_dir, assets))).zeroshot is None  # the default eval: perplexity only
    neither = ("eval.zeroshot.dense=false", "eval.zeroshot.pruned=false")
    assert plan_run(compose_run(*offline(tiny_model_dir, assets, *neither))).zeroshot is None


OFFICIAL_SIZES = {"piqa": 1838, "boolq": 3270, "rte": 277, "winogrande": 1267, "openbookqa": 500, "arc_easy": 2376,
                  "arc_challenge": 1172, "hellaswag": 10042}


def test_offline_sets_through_the_stock_definitions(tiny_model_dir, assets):
    """Each offline set, built by lm-eval from its stock definition, has the official size, and its first
    document renders to the stock prompt, choices and answer."""
    suite = plan_run(compose_run(*offline(tiny_model_dir, assets))).zeroshot
    assert set(suite.load_data()) == set(OFFICIAL_SIZES)
    tasks = suite.manager.load(suite.specs())["tasks"]
    assert {name: len(task.eval_docs) for name, task in tasks.items()} == OFFICIAL_SIZES

    def first(name):
        task = tasks[name]
        doc = task.eval_docs[0]
        return task.doc_to_text(doc), task.doc_to_choice(doc), task.doc_to_target(doc)

    text, choices, target = first("arc_easy")
    assert text == ("Question: Which statement best explains why photosynthesis is the foundation of most food webs?"
                    "\nAnswer:")
    assert choices[target] == "Sunlight is the source of energy for nearly all ecosystems."
    text, choices, target = first("arc_challenge")
    assert text.startswith("Question: An astronomer observes that a planet rotates faster") and text.endswith("\nAnswer:")
    assert choices[target] == "Planetary days will become shorter."  # answerKey C
    text, choices, target = first("openbookqa")
    assert text.startswith("A person wants to start saving money") and choices[target] == "quit eating lunch out"
    assert first("hellaswag") == (
        "Roof shingle removal: A man is sitting on a roof. he",
        ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.",
         "starts pulling up roofing on a roof."],
        3,
    )
    text, choices, target = first("boolq")
    assert text.endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    assert choices[target] == "no"  # answer: false
    assert first("rte")[1:] == (["True", "False"], 1)


def test_bad_zeroshot_settings_are_clear_errors(tiny_model_dir, assets, tmp_path):
    def error(*overrides):
        return plan_error(*offline(tiny_model_dir, assets, *overrides))

    assert "unknown lm-eval task 'winogrand'; did you mean winogrande" in error("eval.zeroshot.tasks=[piqa,winogrand]")
    assert "eval.zeroshot.local.piqa.task: unknown lm-eval task 'piqa2'" in error("+eval.zeroshot.local.piqa.task=piqa2")
    assert "'ai2_arc' is an lm-eval group or tag" in error("eval.zeroshot.tasks=[ai2_arc]")
    assert "eval.zeroshot.limit=0 must be a positive integer" in error("eval.zeroshot.limit=0")
    assert "eval.zeroshot.limit=-5 must be a positive integer" in error("eval.zeroshot.limit=-5")
    assert "eval.zeroshot.num_fewshot=-1 must be 0 or more" in error("eval.zeroshot.num_fewshot=-1")
    assert "batch_size='big' must be a positive integer or 'auto'" in error("eval.zeroshot.batch_size=big")
    assert "lists piqa more than once" in error("eval.zeroshot.tasks=[piqa,piqa]")
    missing = assets.resolve() / "piqa" / "train.jsonl"
    assert f"eval.zeroshot.local.piqa.data_files.validation: local task file {missing} does not exist" in error(
        "eval.zeroshot.local.piqa.data_files.validation=piqa/train.jsonl"
    )
    assert f"local task file {tmp_path / 'none.jsonl'} does not exist" in error(
        f"eval.zeroshot.local.piqa.data_files.validation={tmp_path / 'none.jsonl'}"
    )
    assert "relative to the offline assets directory, which is not set" in error("paths.assets=null")
    assert "valid layouts: arc_nested, boolq_answer, hellaswag_lines, openbookqa_nested" in error(
        "eval.zeroshot.local.boolq.layout=boolq_label"
    )
    assert "unknown split dev; valid splits: train, validation, test" in error(
        "+eval.zeroshot.local.piqa.data_files.dev=piqa/valid.jsonl"
    )
    assert "no train file (drawing them from the evaluated split would leak the answers)" in error("eval.zeroshot.num_fewshot=5")
    assert f"task directory {tmp_path / 'tasks'} does not exist" in error(f"eval.zeroshot.include_path=[{tmp_path / 'tasks'}]")


def test_dense_cache_key_follows_the_settings(tiny_model_dir, assets):
    def identity(*overrides):
        return plan_run(compose_run(*offline(tiny_model_dir, assets, "eval.zeroshot.tasks=[piqa,rte]", *overrides))).zeroshot.identity()

    base = identity("eval.zeroshot.limit=50")
    assert identity("eval.zeroshot.limit=50") == base
    assert identity("eval.zeroshot.limit=60") != base
    assert identity("eval.zeroshot.limit=50", "eval.zeroshot.num_fewshot=0", "eval.zeroshot.batch_size=4") != base
    assert identity("eval.zeroshot.limit=50", "+eval.zeroshot.local.piqa.dataset_path=csv") != base


# --- an own task definition on local files, end to end (tiny model, the command line) --------

CAPITALS = [("France", ["Lyon", "Paris"], 1), ("Italy", ["Rome", "Milan"], 0), ("Japan", ["Osaka", "Tokyo"], 1),
            ("Spain", ["Madrid", "Seville"], 0), ("Peru", ["Cusco", "Lima"], 1), ("Egypt", ["Cairo", "Giza"], 0)]
CAPITALS_TASK = """\
task: capitals
dataset_path: json
output_type: multiple_choice
test_split: test
doc_to_text: "Question: What is the capital of {{country}}?\\nAnswer:"
doc_to_choice: "{{options}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def test_own_task_on_local_files_with_the_dense_cache(tiny_model_dir, assets, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "capitals.yaml").write_text(CAPITALS_TASK)
    data = tmp_path / "capitals.jsonl"
    data.write_text("".join(json.dumps({"country": c, "options": o, "answer": a}) + "\n" for c, o, a in CAPITALS))
    args = [
        "model=local", f"model.pretrained={tiny_model_dir}", f"paths.assets={assets}", f"paths.cache={tmp_path / 'cache'}",
        "eval=zeroshot", "eval.zeroshot.tasks=[capitals]", f"eval.zeroshot.include_path=[{tasks}]",
        f"+eval.zeroshot.local.capitals.data_files.test={data}", "eval.perplexity.seqlen=64", "eval.perplexity.max_windows=2",
        "calibration.nsamples=2", "calibration.seqlen=64", "progress=false",
    ]
    first, second = tmp_path / "first", tmp_path / "second"
    for run_dir, logger in ((first, "logger=wandb"), (second, "logger=none")):
        done = symprune(*args, logger, f"hydra.run.dir={run_dir}")
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((run_dir / "results.json").read_text()) for run_dir in (first, second))

    assert one["caches"]["zeroshot_dense"]["from_cache"] is False and two["caches"]["zeroshot_dense"]["from_cache"] is True
    assert one["caches"]["zeroshot_dense"]["entry"] == two["caches"]["zeroshot_dense"]["entry"]
    assert one["metrics"]["zeroshot"]["dense"] == two["metrics"]["zeroshot"]["dense"]
    dense, pruned = one["metrics"]["zeroshot"]["dense"], one["metrics"]["zeroshot"]["pruned"]
    assert dense["capitals"]["samples"] == pruned["capitals"]["samples"] == len(CAPITALS)
    for scores in (dense, pruned):  # six two-way questions: accuracies are multiples of 1/6
        assert round(scores["capitals"]["acc"] * 6, 9) in range(7) and scores["mean"]["acc"] == scores["capitals"]["acc"]
    assert f"local test {data}" in one["data"]["zeroshot/capitals"]["origin"]
    assert "zeroshot" in one["timings"]

    (table_file,) = (first / "wandb").glob("offline-run-*/files/media/table/zeroshot/tasks_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["model", "task", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "samples"]
    assert [row[:2] for row in table["data"]] == [["dense", "capitals"], ["dense", "mean"], ["pruned", "capitals"], ["pruned", "mean"]]
    assert table["data"][2][2] == pruned["capitals"]["acc"]


# --- the real model on the offline benchmark sets --------------------------------------------


def run_on_session_model(smollm2, monkeypatch, *overrides) -> tuple[dict, object]:
    """symprune's run (plan, then execute) on a copy of the session's SmolLM2 model (instead of loading it
    again): offline PIQA and WinoGrande, magnitude pruning to 90%; the run record and the pruned model."""
    candidate = copy.deepcopy(smollm2[0])
    monkeypatch.setattr(runner, "load_placed", lambda *args: candidate)
    plan = plan_run(compose_run(
        "eval=zeroshot_offline", "eval.zeroshot.tasks=[piqa,winogrande]", "score=magnitude", "sparsity.ratio=0.9",
        "eval.dense=false", "eval.perplexity.seqlen=128", "eval.perplexity.max_windows=1", "logger=none", "progress=false",
        *overrides,
    ))
    return execute(plan, NoLogger()), candidate


@pytest.mark.real_model
def test_real_model_offline_piqa_dense_vs_magnitude_90(smollm2, assets, tmp_path, monkeypatch):
    """Through symprune, 200 PIQA examples: the dense model is well above chance and magnitude pruning to 90%
    clearly below it. (WinoGrande, at chance for this small model dense and pruned alike, cannot show this;
    its scores are checked against lm-eval's below.)"""
    record, _ = run_on_session_model(
        smollm2, monkeypatch, "eval.zeroshot.tasks=[piqa]", "eval.zeroshot.limit=200", f"paths.assets={assets}",
        f"paths.cache={tmp_path}",
    )
    dense, pruned = record.metrics["zeroshot"]["dense"], record.metrics["zeroshot"]["pruned"]
    print(f"SmolLM2 offline zero-shot (200 examples): dense {dense}, magnitude 90% {pruned}")
    assert record.metrics["sparsity"]["overall"] == pytest.approx(0.9, abs=1e-3)
    assert record.caches["zeroshot_dense"]["from_cache"] is False
    assert dense["piqa"]["samples"] == pruned["piqa"]["samples"] == 200

    # PIQA: chance is 0.5; the dense model is more than three standard errors (0.034) above it, and pruning
    # drops it by more than twice the standard error of the difference (about 0.05)
    for metric in ("acc", "acc_norm"):
        assert dense["piqa"][metric] > 0.5 + 3 * dense["piqa"][f"{metric}_stderr"]
        assert pruned["piqa"][metric] < dense["piqa"][metric] - 0.1


def stock_on_local_file(yaml_file: str, path: Path) -> dict:
    """lm-eval's own task definition reading a local JSON-lines file as its only (validation) split."""
    config = load_yaml(STOCK_TASKS / yaml_file)
    config.update(
        dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {"validation": str(path)}},
        training_split=None, validation_split="validation", test_split=None,
    )
    return config


@pytest.mark.real_model
def test_recorded_scores_are_lm_evals_on_the_pruned_model_in_memory(smollm2, assets, monkeypatch):
    """The pruned scores symprune records are exactly what lm-eval's simple_evaluate returns when called
    directly on the same pruned model in memory."""
    limit = 40
    record, pruned_model = run_on_session_model(
        smollm2, monkeypatch, f"eval.zeroshot.limit={limit}", "eval.zeroshot.batch_size=8", "eval.zeroshot.dense=false",
        f"paths.assets={assets}",
    )
    recorded = record.metrics["zeroshot"]
    assert list(recorded) == ["pruned"]
    direct = lm_eval.simple_evaluate(
        model=HFLM(pretrained=pruned_model, tokenizer=smollm2[1], batch_size=8),
        tasks=[
            stock_on_local_file("piqa/piqa.yaml", assets / "piqa" / "valid.jsonl"),
            stock_on_local_file("winogrande/default.yaml", assets / "winogrande" / "dev.jsonl"),
        ],
        num_fewshot=0,
        limit=limit,
        log_samples=False,
    )
    for task in ("piqa", "winogrande"):
        lm_eval_scores = {key.split(",")[0]: value for key, value in direct["results"][task].items() if "acc" in key}
        assert lm_eval_scores == {key: value for key, value in recorded["pruned"][task].items() if key != "samples"}
        assert recorded["pruned"][task]["samples"] == direct["n-samples"][task]["effective"] == limit
    assert recorded["pruned"]["mean"]["acc"] == pytest.approx(
        (direct["results"]["piqa"]["acc,none"] + direct["results"]["winogrande"]["acc,none"]) / 2
    )
