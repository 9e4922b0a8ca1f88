"""Name → component registries, so a config name selects a pure function.

A component is registered with a parameter dataclass. Building it from a config
node checks the name, the parameter names and types (OmegaConf structured
merge) and the ranges (the dataclass's ``__post_init__``), all before any
model or data is touched.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A bad configuration value, reported before expensive work starts."""


@dataclass
class NoParams:
    """Parameter set of a component that takes none."""


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable[..., Any]
    params: type
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Built:
    """A component with its validated parameters bound."""

    entry: Entry
    params: Any

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def fn(self) -> Callable[..., Any]:
        return functools.partial(self.entry.fn, **dataclasses.asdict(self.params))

    def param_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    def meta(self, key: str, default: Any = None) -> Any:
        """A registration attribute; a callable one is evaluated on the bound parameters."""
        value = self.entry.meta.get(key, default)
        return value(self.params) if callable(value) else value


class Registry:
    def __init__(self, kind: str, config_key: str = "name"):
        self.kind = kind
        self.config_key = config_key
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, params: type = NoParams, **meta: Any):
        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(name, fn, params, meta)
            return fn

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} '{name}'; valid {self.kind} names: {', '.join(self.names())}"
            )
        return self._entries[name]

    def build(self, node: Mapping[str, Any] | DictConfig) -> Built:
        """Validate a config node ``{<config_key>: name, **params}`` and bind its parameters."""
        node = node if isinstance(node, DictConfig) else OmegaConf.create(dict(node))
        if self.config_key not in node:
            raise ConfigError(f"the {self.kind} config has no '{self.config_key}' key: {OmegaConf.to_yaml(node)}")
        entry = self.get(node[self.config_key])
        values = {k: v for k, v in node.items() if k != self.config_key}
        try:
            merged = OmegaConf.merge(OmegaConf.structured(entry.params), values)
            params = OmegaConf.to_object(merged)
        except OmegaConfBaseException as error:
            allowed = [f.name for f in dataclasses.fields(entry.params)]
            raise ConfigError(
                f"{self.kind} '{entry.name}': {str(error).splitlines()[0]} "
                f"(its parameters: {', '.join(allowed) or 'none'})"
            ) from None
        return Built(entry, params)
