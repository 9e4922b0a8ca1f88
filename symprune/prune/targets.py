"""Which matrices of the decoder blocks are pruned: regular expressions over their full module names.

A name is selected when some ``targets`` pattern is found in it (``re.search``) and no ``ignore`` pattern is;
``targets: null`` selects every matrix a block prunes by default (its linears and experts' matrices, routers
not). A router is pruned only when a ``targets`` pattern names it. Embeddings and the LM head lie outside the
blocks: a pattern that matches only them is an error like any pattern that matches nothing.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from symprune.errors import ConfigError


def check_patterns(key: str, patterns: Iterable[str]) -> None:
    """Every pattern compiles as a regular expression; ``key`` names the setting in the error."""
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigError(f"{key}: '{pattern}' is not a regular expression ({error})") from None


@dataclass(frozen=True)
class Targets:
    include: tuple[str, ...] | None = None  # None: every matrix that is pruned by default
    ignore: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, targets, ignore) -> Targets:
        selection = cls(None if targets is None else tuple(targets), tuple(ignore or ()))
        check_patterns("targets", selection.include or ())
        check_patterns("ignore", selection.ignore)
        return selection

    @property
    def is_default(self) -> bool:
        return self.include is None and not self.ignore

    def selects(self, name: str, by_default: bool = True) -> bool:
        """Whether the matrix ``name`` is pruned; ``by_default``: whether it is without a ``targets`` list."""
        if any(re.search(pattern, name) for pattern in self.ignore):
            return False
        if self.include is None:
            return by_default
        return any(re.search(pattern, name) for pattern in self.include)

    def check(self, candidates: Mapping[str, bool], outside: Iterable[str] = ()) -> None:
        """Every pattern must match some candidate (full name → pruned by default), and something must be left
        to prune. ``outside``: linear layers outside the decoder blocks (the LM head), named when a pattern
        matches only them."""
        outside = list(outside)
        for key, patterns in (("targets", self.include or ()), ("ignore", self.ignore)):
            for pattern in patterns:
                if any(re.search(pattern, name) for name in candidates):
                    continue
                elsewhere = [name for name in outside if re.search(pattern, name)]
                if elsewhere:
                    raise ConfigError(f"{key}: '{pattern}' matches {', '.join(elsewhere)}, outside the decoder blocks; "
                                      f"symprune prunes the matrices inside them")
                closest = difflib.get_close_matches(pattern, list(candidates), n=3, cutoff=0.0)
                raise ConfigError(f"{key}: '{pattern}' matches no prunable matrix of the model; closest names: "
                                  f"{', '.join(closest)}")
        if not any(self.selects(name, default) for name, default in candidates.items()):
            raise ConfigError(f"targets={list(self.include) if self.include is not None else None} with "
                              f"ignore={list(self.ignore)} leave no matrix to prune")
