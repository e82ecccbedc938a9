"""The plugin manager: built-in quantizer plugins plus the ``qeval`` entry-point group.

Built-ins are registered exactly like third-party plugins (principle: no special path for ours).
External plugins are the entry points of group ``qeval``; the environment variable
``QEVAL_PLUGINS`` restricts them: unset loads all, ``none`` (or empty) loads none, and a
comma-separated list of entry-point names loads only those, in name order. A plugin that fails
to import or to register, or a quantizer that breaks the contract or clashes with another's name,
is recorded (``qeval plugins`` shows it) and everything else still loads (see :class:`Registry`).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from qeval_plugins.core import hookspecs
from qeval_plugins.core.errors import QevalError, did_you_mean
from qeval_plugins.core.options import FrozenOptions, OptionsChanged
from qeval_plugins.core.quantizer import LoadContext, Quantizer, Scheme, contract_problems
from qeval_plugins.core.text import one_line as printable
from qeval_plugins.core.version import qeval_version

logger = logging.getLogger("qeval")
ENTRY_POINT_GROUP = "qeval"
PLUGINS_ENV = "QEVAL_PLUGINS"
BUILTIN_PLUGINS = (
    "qeval_plugins.quantizers.baseline",
    "qeval_plugins.quantizers.bnb",
    "qeval_plugins.quantizers.prequantized",
    "qeval_plugins.quantizers.rtn",
    "qeval_plugins.quantizers.gptq_sim",
    "qeval_plugins.quantizers.gptq",
    "qeval_plugins.quantizers.torchao",
    "qeval_plugins.quantizers.hqq",
    "qeval_plugins.quantizers.quanto",
    "qeval_plugins.quantizers.autoround",
)


@dataclass
class PluginInfo:
    """Where a plugin came from and what it provided (or why it failed).

    ``error`` says why the whole plugin is not loaded; ``problems`` name its quantizers that are
    disabled and the name clashes it is part of (its other quantizers work).
    """

    name: str
    source: str  # "built-in" or the distribution name
    version: str
    quantizers: list[str] = field(default_factory=list)
    error: str | None = None
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """``plugin 'bnb' (built-in)``: how messages name the plugin."""
        return f"plugin '{self.name}' ({self.source})"


@dataclass(frozen=True)
class Registered:
    """A quantizer together with the plugin that registered it."""

    quantizer: Quantizer
    plugin: PluginInfo


@dataclass(frozen=True)
class DenseWeight:
    """A ``qeval_dequantize_weight`` answer and the plugin that gave it."""

    tensor: Any
    plugin: str


class Registry:
    """All loaded plugins and the quantizers they registered, by name and alias.

    A plugin mistake never stops the others: a plugin that fails to import or register (any
    exception, ``sys.exit()`` included) or implements an unknown hook is unloaded and recorded in
    ``PluginInfo.error``; a quantizer that breaks the contract
    (:func:`~qeval_plugins.core.quantizer.contract_problems`) is disabled, and name and alias
    clashes are settled by :meth:`add_quantizer` whatever the loading order. Each is recorded in
    ``PluginInfo.problems`` (of both plugins, for a clash), and asking for a disabled or contested
    name is one QevalError saying why. Built-ins load first and keep their names.
    """

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager("qeval")
        self.manager.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._by_name: dict[str, Registered] = {}
        self._canonical: dict[str, str] = {}  # name or alias -> name
        self._disabled: dict[str, str] = {}  # name or alias of a disabled quantizer -> why
        self._contested: dict[str, str] = {}  # name or alias two external plugins claim -> why

    # loading -----------------------------------------------------------------------------
    def load(self) -> Registry:
        """Load built-in and external plugins and collect their quantizers."""
        version = qeval_version()
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
        info = PluginInfo(name=name, source=printable(source), version=printable(version))
        if name in self.plugins:
            other = self.plugins[name]
            self.plugins[_free_key(name, self.plugins)] = info
            self._fail(info, f"its name is taken by {other.describe()}; rename the entry point")
            return
        self.plugins[name] = info
        try:
            plugin = importlib.import_module(target) if isinstance(target, str) else target.load()
            problem = self._hook_problem(plugin)
            if problem is None:
                self.manager.register(plugin, name=name)
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # sys.exit() too: a broken plugin must not stop qeval
            self._fail(info, f"failed to load: {_describe(error)}")
            return
        if problem is not None:
            self._fail(info, f"failed to load: {problem}")
            return
        for impl in self.manager.hook.qeval_register_quantizers.get_hookimpls():
            if impl.plugin_name == name:
                self._call_register(impl, info)

    def _hook_problem(self, plugin: Any) -> str | None:
        """An unknown or undecorated hook of ``plugin`` (pluggy's check_pending, per plugin)."""
        specs = [name for name in dir(hookspecs) if name.startswith("qeval_")]
        for attribute in dir(plugin):
            options = self.manager.parse_hookimpl_opts(plugin, attribute)
            if options is None:
                if attribute in specs and callable(getattr(plugin, attribute, None)):
                    return (
                        f"function '{attribute}' is not decorated with @qeval_plugins.hookimpl, "
                        f"so qeval never calls it"
                    )
                continue
            hook = options.get("specname") or attribute
            if hook not in specs and not options.get("optionalhook"):
                return (
                    f"unknown hook '{hook}'.{did_you_mean(hook, specs)} Hooks: {', '.join(specs)}"
                )
        return None

    def _call_register(self, impl: Any, info: PluginInfo) -> None:
        """Run the plugin's registration hook; admit its quantizers only if it returns."""
        pending: list[Quantizer] = []

        def register(quantizer: Quantizer) -> None:
            if not isinstance(quantizer, Quantizer):
                raise TypeError(
                    f"register() needs a qeval_plugins.Quantizer instance, got {quantizer!r}"
                )
            pending.append(quantizer)

        try:
            impl.function(**{"register": register} if "register" in impl.argnames else {})
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # nothing of a half-registered plugin is kept
            self._fail(info, f"failed to register: {_describe(error)}")
            return
        for quantizer in pending:
            self.add_quantizer(quantizer, info)

    def add_quantizer(self, quantizer: Quantizer, info: PluginInfo) -> bool:
        """Register ``quantizer`` for plugin ``info``; False (and recorded) when it is disabled.

        The outcome never depends on the order plugins load in, except that built-ins come
        first and always keep their names and aliases:

        * a quantizer that breaks the contract is disabled;
        * a *name* already taken by a built-in, or by the same plugin, disables the newcomer; a
          name two external plugins both use as a name disables both quantizers, and one that
          another plugin has only as an alias goes to the quantizer of that name;
        * an *alias* already taken keeps the quantizer but drops the alias — from both
          quantizers when two external plugins claim it; asking for it names both.

        Tests and embedders may call this directly.
        """
        who = f"quantizer {quantizer.name!r} of {info.describe()}"
        problems = contract_problems(quantizer)
        if problems:
            self._disable(quantizer, info, f"{who} is disabled: {'; '.join(problems)}")
            return False
        taken = quantizer.name in self._canonical or quantizer.name in self._contested
        if taken and not self._name_beats_alias(quantizer.name, info, who):
            return self._name_clash(quantizer, info, who)
        aliases = []
        for alias in quantizer.aliases:
            if alias in self._canonical or alias in self._contested:
                self._alias_clash(alias, quantizer, info, who)
            else:
                aliases.append(alias)
        self._by_name[quantizer.name] = Registered(quantizer, info)
        for key in (quantizer.name, *aliases):
            self._canonical[key] = quantizer.name
        info.quantizers.append(quantizer.name)
        return True

    def _name_beats_alias(self, key: str, info: PluginInfo, who: str) -> bool:
        """Give ``key`` to the quantizer named so when another plugin holds it only as an alias.

        True when the alias was taken back; False when ``key`` is a name, or a built-in's or the
        same plugin's alias (those clashes stay clashes).
        """
        if key not in self._canonical:
            return False
        owner = self._by_name[self._canonical[key]]
        if owner.quantizer.name == key or owner.plugin.source == "built-in" or owner.plugin is info:
            return False
        del self._canonical[key]
        owner.plugin.problems.append(
            f"quantizer '{owner.quantizer.name}' of {owner.plugin.describe()}: alias '{key}' "
            f"dropped: it is the name of {who}"
        )
        return True

    def _name_clash(self, quantizer: Quantizer, info: PluginInfo, who: str) -> bool:
        key = quantizer.name
        if key in self._contested:  # already fought over by two plugins: nobody has it
            self._disable(quantizer, info, f"{who} is disabled: {self._contested[key]}")
            return False
        owner = self._by_name[self._canonical[key]]
        other = f"quantizer '{owner.quantizer.name}' of {owner.plugin.describe()}"
        why = f"'{key}' is already the name or an alias of {other}"
        if owner.plugin is info or owner.plugin.source == "built-in":
            fix = (
                "a plugin must use each name once (report it to the plugin's author)."
                if owner.plugin is info
                else "built-in names cannot be taken; rename the plugin's quantizer."
            )
            if owner.plugin is not info:
                owner.plugin.problems.append(f"'{key}' is also claimed by {who}, which is disabled")
            self._disable(quantizer, info, f"{who} is disabled: {why}; {fix}")
            return False
        # two external plugins: neither wins, whichever loaded first
        why = (
            f"'{key}' is claimed by both {other} and {who}; both are disabled (uninstall one of "
            f"the two plugins or leave one out with {PLUGINS_ENV})"
        )
        self._unregister(owner)
        self._disable(owner.quantizer, owner.plugin, why)
        self._disable(quantizer, info, why)
        self._contested[key] = why
        return False

    def _alias_clash(self, alias: str, quantizer: Quantizer, info: PluginInfo, who: str) -> None:
        if alias in self._contested:
            info.problems.append(f"{who}: alias '{alias}' dropped: {self._contested[alias]}")
            return
        owner = self._by_name[self._canonical[alias]]
        other = f"quantizer '{owner.quantizer.name}' of {owner.plugin.describe()}"
        keeps = owner.plugin.source == "built-in" or alias == owner.quantizer.name
        if keeps or owner.plugin is info:
            info.problems.append(f"{who}: alias '{alias}' dropped: it belongs to {other}")
            return
        why = (
            f"alias '{alias}' is claimed by both {other} and {who}; neither keeps it, use the "
            f"quantizer's name"
        )
        del self._canonical[alias]
        self._contested[alias] = why
        owner.plugin.problems.append(why)
        info.problems.append(why)
        logger.warning("%s (see 'qeval plugins')", why)

    def _unregister(self, owner: Registered) -> None:
        """Take back an external quantizer registered earlier (a name clash found later)."""
        name = owner.quantizer.name
        del self._by_name[name]
        for key in [key for key, value in self._canonical.items() if value == name]:
            del self._canonical[key]
        owner.plugin.quantizers.remove(name)

    def _disable(self, quantizer: Quantizer, info: PluginInfo, why: str) -> None:
        info.problems.append(why)
        logger.warning("%s (see 'qeval plugins')", why)
        aliases = quantizer.aliases if isinstance(quantizer.aliases, tuple | list) else ()
        keys = [quantizer.name, *aliases]
        for key in keys:
            if isinstance(key, str) and key.strip().lower() not in self._canonical:
                self._disabled.setdefault(key.strip().lower(), why)

    def _fail(self, info: PluginInfo, error: str) -> None:
        info.error = printable(error)
        if self.manager.get_plugin(info.name) is not None and self.plugins.get(info.name) is info:
            self.manager.unregister(name=info.name)
        logger.warning("%s %s (see 'qeval plugins')", info.describe(), info.error)

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
        if key in self._disabled:
            raise QevalError(self._disabled[key])
        if key in self._contested:
            raise QevalError(self._contested[key])
        hint = did_you_mean(key, self._canonical)
        broken = [info.name for info in self.plugins.values() if info.error]
        note = f" Plugins that failed to load: {', '.join(broken)}." if broken else ""
        raise QevalError(
            f"unknown quantizer '{name}'.{hint} Run 'qeval quantizers' to list them "
            f"(installed: {', '.join(self._by_name)}).{note}"
        )

    def plugin_of(self, quantizer: Quantizer) -> PluginInfo | None:
        """The plugin that registered this very quantizer object, or None."""
        entry = self._by_name.get(quantizer.name)
        return entry.plugin if entry is not None and entry.quantizer is quantizer else None

    def option_owners(self, option: str) -> list[str]:
        """Names of the quantizers that declare an option called ``option``."""
        return [
            name
            for name, entry in self._by_name.items()
            if any(o.name == option for o in entry.quantizer.options)
        ]

    def dequantize_weight(self, module: Any) -> DenseWeight | None:
        """The first non-None ``qeval_dequantize_weight`` answer for ``module``, and its plugin.

        Calls the implementations in pluggy's order (tryfirst first, the built-in plain-layer
        answer last). A hook that raises is one QevalError naming the plugin and layer type.
        """
        for impl in reversed(self.manager.hook.qeval_dequantize_weight.get_hookimpls()):
            try:
                answer = impl.function(**({"module": module} if "module" in impl.argnames else {}))
            except Exception as error:
                raise QevalError(
                    f"plugin '{impl.plugin_name}': qeval_dequantize_weight failed on a "
                    f"{type(module).__name__} layer: {_describe(error)}"
                ) from error
            if answer is not None:
                return DenseWeight(answer, impl.plugin_name)
        return None


def run_load_kwargs(
    quantizer: Quantizer, plugin: PluginInfo, options: Mapping[str, Any], context: LoadContext
) -> dict[str, Any]:
    """``quantizer.load_kwargs`` held to the contract (``plugin`` registered it).

    It gets read-only options and must return a dict. Breaking a rule or raising (other than a
    QevalError of its own) is one QevalError naming the plugin and the rule.
    """
    result = _call_plugin(quantizer, plugin, "load_kwargs", FrozenOptions(options), context)
    if not isinstance(result, dict):
        raise QevalError(
            f"{_who(quantizer, plugin)}: load_kwargs() must return a dict of from_pretrained "
            f"arguments, got {type(result).__name__}."
        )
    return dict(result)  # the caller pops from it; the plugin's own dict stays intact


def run_quantize(
    quantizer: Quantizer,
    plugin: PluginInfo,
    model: Any,
    options: Mapping[str, Any],
    context: LoadContext,
) -> Any:
    """``quantizer.quantize`` held to the contract; returns the quantized model.

    It gets read-only options and must return a ``torch.nn.Module`` (None too is an error: a
    forgotten ``return model`` must not evaluate the unquantized model). Breaking a rule or
    raising (other than a QevalError of its own) is one QevalError naming the plugin and the rule.
    """
    import torch

    result = _call_plugin(quantizer, plugin, "quantize", model, FrozenOptions(options), context)
    if not isinstance(result, torch.nn.Module):
        raise QevalError(
            f"{_who(quantizer, plugin)}: quantize() must return the quantized model (a "
            f"torch.nn.Module), got {type(result).__name__}; end it with 'return model'."
        )
    return result


def run_save_quantized(
    quantizer: Quantizer,
    plugin: PluginInfo,
    model: Any,
    folder: Any,
    options: Mapping[str, Any],
    context: LoadContext,
) -> None:
    """``quantizer.save_quantized`` held to the contract: it must write at least one file into
    ``folder``; raising (other than a QevalError or an OSError: a full disk is not a plugin
    bug) is one QevalError naming the plugin."""
    from pathlib import Path

    try:
        quantizer.save_quantized(model, Path(folder), FrozenOptions(options), context)
    except (QevalError, OSError):
        raise
    except Exception as error:
        raise QevalError(
            f"{_who(quantizer, plugin)}: save_quantized() raised {_describe(error)} (a plugin "
            f"bug: report it to the plugin's author; QEVAL_DEBUG=1 shows the traceback)."
        ) from error
    if not any(Path(folder).iterdir()):
        raise QevalError(
            f"{_who(quantizer, plugin)}: save_quantized() wrote nothing into {folder}."
        )


def run_load_quantized(
    quantizer: Quantizer,
    plugin: PluginInfo,
    folder: Any,
    options: Mapping[str, Any],
    context: LoadContext,
) -> Any:
    """``quantizer.load_quantized`` held to the contract: a ``torch.nn.Module`` or None (qeval
    then loads the folder like a checkpoint); anything else is one QevalError."""
    import torch

    result = _call_plugin(
        quantizer, plugin, "load_quantized", folder, FrozenOptions(options), context
    )
    if result is not None and not isinstance(result, torch.nn.Module):
        raise QevalError(
            f"{_who(quantizer, plugin)}: load_quantized() must return a torch.nn.Module or None, "
            f"got {type(result).__name__}."
        )
    return result


def run_finalize_options(
    quantizer: Quantizer, plugin: PluginInfo, options: Mapping[str, Any]
) -> dict[str, Any]:
    """``quantizer.finalize_options`` held to the contract; returns the options to use and record.

    It gets read-only options and must return a dict with exactly the declared option names;
    every value is checked again against its option (type, finiteness, range, choices), so the
    recorded options are validated ones. A QevalError of its own passes unchanged.
    """
    result = _call_plugin(quantizer, plugin, "finalize_options", FrozenOptions(options))
    declared = {option.name: option for option in quantizer.options}
    if not isinstance(result, dict) or set(result) != set(declared):
        got = sorted(result) if isinstance(result, dict) else type(result).__name__
        raise QevalError(
            f"{_who(quantizer, plugin)}: finalize_options() must return a dict of exactly the "
            f"declared options ({', '.join(declared) or 'none'}), got {got}."
        )
    try:
        return {name: opt.coerce(result[name], quantizer.name) for name, opt in declared.items()}
    except QevalError as error:
        raise QevalError(
            f"{_who(quantizer, plugin)}: finalize_options() returned an invalid value: {error}"
        ) from error


def run_scheme(
    quantizer: Quantizer, plugin: PluginInfo, options: Mapping[str, Any]
) -> dict[str, Any] | None:
    """``quantizer.scheme(options)`` held to the contract, as the results' ``scheme`` block.

    It must return a :class:`~.quantizer.Scheme` (or None when the method does not say); anything
    else, or a scheme with a non-text field, is one QevalError naming the plugin.
    """
    scheme = _call_plugin(quantizer, plugin, "scheme", FrozenOptions(options))
    if scheme is None:
        return None
    problems = scheme.problems() if isinstance(scheme, Scheme) else ["it is not a Scheme"]
    if problems:
        raise QevalError(
            f"{_who(quantizer, plugin)}: scheme() must return a qeval_plugins.Scheme or None "
            f"({problems[0]}; got {printable(repr(scheme))[:120]})."
        )
    return scheme.record()


def _call_plugin(quantizer: Quantizer, plugin: PluginInfo, method: str, *args: Any) -> Any:
    """``quantizer.<method>(*args)``; a change to its FrozenOptions or an exception is named."""
    try:
        return getattr(quantizer, method)(*args)
    except QevalError:
        raise
    except OptionsChanged as error:
        raise QevalError(
            f"{_who(quantizer, plugin)}: {method}() must not change its options (they are what "
            f"the run records); copy them first with dict(options)."
        ) from error
    except Exception as error:
        raise QevalError(
            f"{_who(quantizer, plugin)}: {method}() raised {_describe(error)} (a plugin bug: "
            f"report it to the plugin's author; QEVAL_DEBUG=1 shows the traceback)."
        ) from error


def _who(quantizer: Quantizer, plugin: PluginInfo) -> str:
    return f"quantizer '{quantizer.name}' of {plugin.describe()}"


def _describe(error: BaseException) -> str:
    """``Kind: message`` of an exception on one line (``SystemExit: 3`` for ``sys.exit(3)``)."""
    return printable(f"{type(error).__name__}: {error}")


def _free_key(name: str, taken: Mapping[str, Any]) -> str:
    """``name#2``, ``name#3``, ...: the first key not in ``taken``."""
    number = 2
    while f"{name}#{number}" in taken:
        number += 1
    return f"{name}#{number}"


def _selected_entry_points() -> list[metadata.EntryPoint]:
    selected = os.environ.get(PLUGINS_ENV)
    entry_points = sorted(  # a stable order: which of two clashing plugins loses is reproducible
        metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name, ep.value)
    )
    if selected is None:
        return entry_points
    wanted = {name.strip() for name in selected.split(",") if name.strip()} - {"none"}
    installed = {ep.name for ep in entry_points}
    builtins = {module.rsplit(".", 1)[-1] for module in BUILTIN_PLUGINS}
    for name in sorted(wanted - installed):  # a typo would otherwise load nothing, silently
        if name in builtins:
            logger.warning(
                "%s names '%s', a built-in plugin: built-ins always load; the variable selects "
                "external plugins only.",
                PLUGINS_ENV,
                name,
            )
            continue
        logger.warning(
            "%s names '%s', which no installed qeval plugin has.%s",
            PLUGINS_ENV,
            printable(name),
            did_you_mean(name, installed),
        )
    return [ep for ep in entry_points if ep.name in wanted]


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    return Registry().load()


def reset_registry() -> None:
    """Forget the loaded registry (tests, or after changing ``QEVAL_PLUGINS``)."""
    get_registry.cache_clear()
