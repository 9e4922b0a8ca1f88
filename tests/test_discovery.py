"""A new score, refinement, allocation rule or sparsity pattern is one module in its package: the package imports
every module it holds, so the module registers itself with no list to edit. A throwaway package of each kind,
written to a temporary directory, is discovered and prunes a tiny model end to end. A pattern declares its kind
of constraint, and a method that cannot keep that kind refuses it before any work."""

import copy
import importlib
import sys
import textwrap

import pytest
import torch
from conftest import tiny_model
from test_driver import calibration

from symprune.errors import ConfigError
from symprune.prune.allocation import ALLOCATIONS
from symprune.prune.driver import prune_model
from symprune.prune.method import build_method
from symprune.prune.patterns import PATTERNS
from symprune.prune.refine import REFINEMENTS
from symprune.prune.scores import SCORES

COMPONENTS = {
    "score": ("symprune.prune.scores", "SCORES", '''
        @SCORES.register("throwaway_column_norm", stats=frozenset({"sq_norm"}), group="row")
        def column_norm(weight, stats):
            """|W_ij| times the column's input norm squared: Wanda with the square kept."""
            return weight.abs() * stats.require("sq_norm", "throwaway_column_norm")
    '''),
    "refinement": ("symprune.prune.refine", "REFINEMENTS", '''
        @REFINEMENTS.register("throwaway_swap_in_first_row", stats=frozenset())
        def swap_in_first_row(weight, pruned, **context):
            """In the first row, grow the first pruned weight and prune the first kept one (the row's count stays)."""
            pruned = pruned.clone()
            grown, cut = int(pruned[0].nonzero()[0]), int((~pruned[0]).nonzero()[0])
            pruned[0, grown], pruned[0, cut] = False, True
            return pruned, {"swapped_rows": 1}
    '''),
    "allocation": ("symprune.prune.allocation", "ALLOCATIONS", '''
        import torch

        @ALLOCATIONS.register("throwaway_first_block_dense")
        def first_block_dense(layout, target, evidence=None):
            """Block 0 at half the target, the rest at the ratio that keeps the size-weighted mean."""
            sizes = layout.size_tensor()
            first = torch.tensor(layout.blocks) == 0
            low = target / 2
            rest = (target * sizes.sum() - low * sizes[first].sum()) / sizes[~first].sum()
            return torch.where(first, torch.full_like(sizes, low), torch.full_like(sizes, float(rest)))
    '''),
    "pattern": ("symprune.prune.patterns", "PATTERNS", '''
        from dataclasses import dataclass

        import torch

        from symprune.prune.patterns.contract import Contract


        @dataclass(frozen=True)
        class ColumnsContract(Contract):
            def violation(self, pruned):
                mixed = (pruned.any(dim=0) & ~pruned.all(dim=0)).sum()
                return f"{int(mixed)} columns partly pruned" if mixed else None


        @dataclass
        class ColumnParams:
            ratio: float = 0.5
            permutes = False

            @property
            def target_sparsity(self):
                return self.ratio

            @property
            def contract(self):
                return ColumnsContract(ratio=self.ratio, kind="columns")

            def column_order(self, scores):
                return None

            def check_layer(self, name, d_out, d_in):
                pass


        @PATTERNS.register("throwaway_columns", params=ColumnParams)
        def columns(scores, ratio):
            """Whole input columns, those with the lowest score sums."""
            lowest = torch.argsort(scores.sum(dim=0), stable=True)[: int(scores.shape[1] * ratio)]
            pruned = torch.zeros_like(scores, dtype=torch.bool)
            pruned[:, lowest] = True
            return pruned
    '''),
}


@pytest.fixture
def throwaway_package(tmp_path, monkeypatch):
    """Write ``<kind>`` component modules into a fresh package that discovers its modules the way symprune's
    component packages do; the registries are restored afterwards."""
    for registry in (SCORES, REFINEMENTS, ALLOCATIONS, PATTERNS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(kind):
        package, registry, body = COMPONENTS[kind]
        directory = tmp_path / f"throwaway_{kind}"
        directory.mkdir()
        (directory / "__init__.py").write_text("from symprune.registry import import_components\n\n"
                                               "import_components(__name__, __path__)\n")
        (directory / "component.py").write_text(f"from {package} import {registry}\n" + textwrap.dedent(body))
        return importlib.import_module(directory.name)

    yield write
    for name in [name for name in sys.modules if name.startswith("throwaway_")]:
        del sys.modules[name]


def test_each_kind_is_discovered_from_its_module_alone(throwaway_package):
    for kind in COMPONENTS:
        throwaway_package(kind)
    assert "throwaway_column_norm" in SCORES.names()
    assert "throwaway_swap_in_first_row" in REFINEMENTS.names()
    assert "throwaway_first_block_dense" in ALLOCATIONS.names()
    assert "throwaway_columns" in PATTERNS.names()


def test_throwaway_components_prune_a_tiny_model_end_to_end(throwaway_package):
    for kind in COMPONENTS:
        throwaway_package(kind)
    model = tiny_model("llama")
    method = build_method({"name": "throwaway_column_norm"}, {"pattern": "unstructured", "ratio": 0.5},
                          {"name": "throwaway_swap_in_first_row"})
    allocation = ALLOCATIONS.build({"name": "throwaway_first_block_dense"})
    report = prune_model(copy.deepcopy(model), method, calibration(), progress=False, allocation=allocation)
    wanda = prune_model(copy.deepcopy(model), build_method({"name": "wanda"}, {"pattern": "unstructured", "ratio": 0.5},
                                                           {"name": "none"}), calibration(), progress=False)
    (_, _, first), (_, _, second) = report.block_sparsities()
    assert first == pytest.approx(0.25, abs=0.01) and second == pytest.approx(0.75, abs=0.01)
    assert report.overall_sparsity == pytest.approx(0.5, abs=0.01)
    assert all(layer.info.get("swapped_rows") == 1 for layer in report.layers)
    name = "model.layers.1.self_attn.q_proj"
    assert not torch.equal(report.masks.mask(name), wanda.masks.mask(name))


def test_a_pattern_of_a_new_kind_prunes_and_is_refused_by_methods_that_cannot_keep_it(throwaway_package):
    throwaway_package("pattern")
    columns = {"pattern": "throwaway_columns", "ratio": 0.25}
    report = prune_model(tiny_model("llama"), build_method({"name": "wanda"}, columns, {"name": "none"}), calibration(),
                         progress=False)
    mask = report.masks.mask("model.layers.0.mlp.down_proj")
    assert int(mask.all(dim=0).sum()) == mask.shape[1] // 4 and bool((mask.any(dim=0) == mask.all(dim=0)).all())
    for score, refine, role in (("sparsegpt", "none", "score 'sparsegpt'"), ("wanda", "dsnot", "refine 'dsnot'")):
        with pytest.raises(ConfigError, match=f"{role} keeps masks of the pattern kinds nm, unstructured; sparsity "
                                              f"pattern 'throwaway_columns' is of kind 'columns'"):
            build_method({"name": score}, columns, {"name": refine})
