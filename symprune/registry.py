"""Name → component registries, so a config name selects a pure function.

A component is registered with a parameter dataclass. ``store_schemas`` turns each
into a structured config in Hydra's ConfigStore (``<group>/<name>_schema``: the
selecting key plus the parameters with their defaults), which the option files of
that group extend, so Hydra checks every key and type while composing. Building a
component from a config node checks the name, the parameter names and types
(OmegaConf structured merge) and the ranges (the dataclass's ``__post_init__``),
all before any model or data is touched.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from symprune.errors import ConfigError


@dataclass
class NoParams:
    """Parameter set of a component that takes none."""


@dataclass(frozen=True)
class Entry:
    """A registered component: its name, function, parameter dataclass and registration attributes."""

    name: str
    fn: Callable[..., Any]
    params: type
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Built:
    """A component with its validated parameters bound."""

    entry: Entry
    params: Any
    options: Any = None  # the registry's options shared by every component of its kind (None: it has none)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def fn(self) -> Callable[..., Any]:
        return functools.partial(self.entry.fn, **dataclasses.asdict(self.params))

    def param_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    def option_dict(self) -> dict[str, Any]:
        return {} if self.options is None else dataclasses.asdict(self.options)

    def meta(self, key: str, default: Any = None) -> Any:
        """A registration attribute; a callable one is evaluated on the bound parameters."""
        value = self.entry.meta.get(key, default)
        return value(self.params) if callable(value) else value


class Registry:
    """The components of one kind (scores, sparsity patterns, ...) by name; ``config_key`` is the key of the
    config node that names one (``name``, or ``pattern`` for sparsity patterns); ``options``: a dataclass of
    settings that every component of the kind takes beside its own parameters and that the driver reads rather
    than the component's function (e.g. how expert statistics are weighted)."""

    def __init__(self, kind: str, config_key: str = "name", options: type | None = None):
        self.kind = kind
        self.config_key = config_key
        self.options = options
        self._entries: dict[str, Entry] = {}

    def option_names(self) -> list[str]:
        return [option.name for option in dataclasses.fields(self.options)] if self.options else []

    def register(self, name: str, params: type = NoParams, **meta: Any):
        """Decorator: register the function under ``name`` with its parameter dataclass ``params``. ``meta``
        holds registration attributes the caller reads (a score's ``stats`` and ``group``, ...), each a value
        or a function of the bound parameters (``Built.meta``)."""

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(name, fn, params, meta)
            return fn

        return decorator

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        """The entry registered under ``name``; an unknown name is a ``ConfigError`` listing the valid ones."""
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
        shared = self.option_names()
        values = {k: v for k, v in node.items() if k != self.config_key and k not in shared}
        try:
            params = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(entry.params), values))
            options = None if self.options is None else OmegaConf.to_object(
                OmegaConf.merge(OmegaConf.structured(self.options), {k: v for k, v in node.items() if k in shared}))
        except OmegaConfBaseException as error:
            allowed = [f.name for f in dataclasses.fields(entry.params)] + shared
            raise ConfigError(
                f"{self.kind} '{entry.name}': {str(error).splitlines()[0]} "
                f"(its parameters: {', '.join(allowed) or 'none'})"
            ) from None
        return Built(entry, params, options)

    def schema(self, name: str) -> type:
        """The structured config of one component: ``{config_key: name}`` followed by its parameters and the
        registry's options."""
        entry = self.get(name)
        hints = typing.get_type_hints(entry.params) | (typing.get_type_hints(self.options) if self.options else {})
        specs: list[tuple[str, Any, Any]] = [(self.config_key, str, field(default=name))]
        for parameter in dataclasses.fields(entry.params) + (dataclasses.fields(self.options) if self.options else ()):
            if parameter.default_factory is not dataclasses.MISSING:
                default = field(default_factory=parameter.default_factory)
            else:
                default = field(default=parameter.default)
            specs.append((parameter.name, hints[parameter.name], default))
        title = "".join(word.capitalize() for word in f"{name} {self.kind}".replace("_", " ").split())
        return dataclasses.make_dataclass(title, specs)

    def store_schemas(self, group: str) -> None:
        """Every component's schema as the Hydra config ``<group>/<name>_schema``."""
        for name in self.names():
            ConfigStore.instance().store(group=group, name=f"{name}_schema", node=self.schema(name))


def import_components(package: str, path: typing.Iterable[str]) -> None:
    """Import every module of a component package (``__name__``, ``__path__``), so that each registers its
    components: adding a score, pattern, refinement or allocation rule is adding its module and its YAML, with
    no list to edit."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
