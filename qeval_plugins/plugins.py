"""The plugin manager: built-in quantizer plugins plus the ``qeval`` entry-point group.

Built-ins are registered exactly like third-party plugins (principle: no special path for ours).
External plugins are the entry points of group ``qeval``; the environment variable
``QEVAL_PLUGINS`` restricts them: unset loads all, ``none`` (or empty) loads none, and a
comma-separated list of entry-point names loads only those. A plugin that fails to import or to
register is recorded (``qeval plugins`` shows it) and the others still load.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from qeval_plugins import hookspecs
from qeval_plugins.errors import QevalError, did_you_mean
from qeval_plugins.quantizer import Quantizer

logger = logging.getLogger("qeval")
ENTRY_POINT_GROUP = "qeval"
PLUGINS_ENV = "QEVAL_PLUGINS"
BUILTIN_PLUGINS = (
    "qeval_plugins.quantizers.baseline",
    "qeval_plugins.quantizers.bnb",
    "qeval_plugins.quantizers.rtn",
)


@dataclass
class PluginInfo:
    """Where a plugin came from and what it provided (or why it failed)."""

    name: str
    source: str  # "built-in" or the distribution name
    version: str
    quantizers: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Registered:
    """A quantizer together with the plugin that registered it."""

    quantizer: Quantizer
    plugin: PluginInfo


class Registry:
    """All loaded plugins and the quantizers they registered, by name and alias."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager("qeval")
        self.manager.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._by_name: dict[str, Registered] = {}
        self._canonical: dict[str, str] = {}  # name or alias -> name

    # loading -----------------------------------------------------------------------------
    def load(self) -> Registry:
        """Load built-in and external plugins and collect their quantizers."""
        version = _own_version()
        for module_name in BUILTIN_PLUGINS:
            self._add_plugin(module_name.rsplit(".", 1)[-1], "built-in", version, module_name)
        for entry_point in _selected_entry_points():
            dist = entry_point.dist
            self._add_plugin(
                entry_point.name,
                dist.metadata["Name"] if dist else "unknown",
                dist.version if dist else "?",
                entry_point,
            )
        return self

    def _add_plugin(self, name: str, source: str, version: str, target: Any) -> None:
        info = PluginInfo(name=name, source=source, version=version)
        self.plugins[name] = info
        try:
            module = importlib.import_module(target) if isinstance(target, str) else target.load()
            self.manager.register(module, name=name)
        except Exception as error:  # a broken plugin must not take the others down
            info.error = f"failed to load: {type(error).__name__}: {error}"
            logger.warning("plugin '%s' %s (see 'qeval plugins')", name, info.error)
            return
        for impl in self.manager.hook.qeval_register_quantizers.get_hookimpls():
            if impl.plugin_name == name:
                self._call_register(impl, info)

    def _call_register(self, impl: Any, info: PluginInfo) -> None:
        added: list[str] = []

        def register(quantizer: Quantizer) -> None:
            self._register(quantizer, info)
            added.append(quantizer.name)

        try:
            impl.function(**{"register": register} if "register" in impl.argnames else {})
        except QevalError:
            raise
        except Exception as error:
            for name in added:  # a half-registered plugin is removed whole
                self._unregister(name)
            info.error = f"failed to register: {type(error).__name__}: {error}"
            logger.warning("plugin '%s' %s (see 'qeval plugins')", info.name, info.error)
            return
        info.quantizers.extend(added)

    def _register(self, quantizer: Quantizer, info: PluginInfo) -> None:
        if not isinstance(quantizer, Quantizer) or not quantizer.name:
            raise TypeError(
                f"register() needs a qeval_plugins.Quantizer instance with a name, "
                f"got {quantizer!r}"
            )
        for key in (quantizer.name, *quantizer.aliases):
            if key in self._canonical:
                other = self._by_name[self._canonical[key]].plugin
                raise QevalError(
                    f"quantizer name '{key}' is registered by both plugin '{other.name}' "
                    f"({other.source}) and plugin '{info.name}' ({info.source}); uninstall one "
                    f"or restrict plugins with {PLUGINS_ENV}."
                )
        self._by_name[quantizer.name] = Registered(quantizer, info)
        for key in (quantizer.name, *quantizer.aliases):
            self._canonical[key] = quantizer.name

    def _unregister(self, name: str) -> None:
        self._by_name.pop(name, None)
        for key in [key for key, value in self._canonical.items() if value == name]:
            del self._canonical[key]

    # lookup ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Canonical quantizer names, in registration order."""
        return list(self._by_name)

    def all(self) -> list[Registered]:
        return list(self._by_name.values())

    def get(self, name: str) -> Registered:
        """The quantizer called ``name`` (or with that alias); QevalError with a hint if none."""
        key = str(name).strip().lower()
        if key in self._canonical:
            return self._by_name[self._canonical[key]]
        hint = did_you_mean(key, self._canonical)
        broken = [info.name for info in self.plugins.values() if info.error]
        note = f" Plugins that failed to load: {', '.join(broken)}." if broken else ""
        raise QevalError(
            f"unknown quantizer '{name}'.{hint} Run 'qeval quantizers' to list them "
            f"(installed: {', '.join(self._by_name)}).{note}"
        )

    def option_owners(self, option: str) -> list[str]:
        """Names of the quantizers that declare an option called ``option``."""
        return [
            name
            for name, entry in self._by_name.items()
            if any(o.name == option for o in entry.quantizer.options)
        ]


def _selected_entry_points() -> list[metadata.EntryPoint]:
    selected = os.environ.get(PLUGINS_ENV)
    entry_points = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    if selected is None:
        return entry_points
    wanted = {name.strip() for name in selected.split(",") if name.strip()} - {"none"}
    return [ep for ep in entry_points if ep.name in wanted]


def _own_version() -> str:
    try:
        return metadata.version("qeval")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    return Registry().load()


def reset_registry() -> None:
    """Forget the loaded registry (tests, or after changing ``QEVAL_PLUGINS``)."""
    get_registry.cache_clear()
