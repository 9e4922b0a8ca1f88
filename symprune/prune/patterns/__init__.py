"""Sparsity patterns: scores in, boolean mask out (True = pruned), which scores compete.

Each pattern's parameter dataclass checks its ranges and, through
``check_layer``, whether a layer's shape admits it, before any work starts.
"""

from symprune.registry import Registry, import_components

PATTERNS = Registry("sparsity pattern", config_key="pattern")

import_components(__name__, __path__)  # every module registers its components
