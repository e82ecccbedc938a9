"""The plugin manager: built-in quantizer plugins plus the ``qeval`` entry-point group.

Built-ins are registered exactly like third-party plugins (principle: no special path for ours),
under plugin names of qeval's own namespace (``qeval.rtn``, ``qeval.hqq``, ...), so an external
entry point never collides with one: an entry point may be called ``hqq``; names starting with
``qeval.`` are reserved. Only quantizer names and aliases can clash
(:meth:`Registry.add_quantizer`).
External plugins are the entry points of group ``qeval``; the environment variable
``QEVAL_PLUGINS`` restricts them: unset loads all, ``none`` (or empty) loads none, and a
comma-separated list of entry-point names loads only those, in name order. A plugin that fails
to import or to register, or a quantizer that breaks the contract or clashes with another's name,
is recorded (``qeval plugins`` shows it; loading logs one summary line) and everything else still
loads (see :class:`Registry`). Dense weights are read through :class:`Dequantizer`.
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
from qeval_plugins.core.specs import spec_model_args
from qeval_plugins.core.text import one_line
from qeval_plugins.core.version import qeval_version

logger = logging.getLogger("qeval")
ENTRY_POINT_GROUP = "qeval"
PLUGINS_ENV = "QEVAL_PLUGINS"
BUILTIN_NAMESPACE = "qeval."  # built-in plugin names: "qeval." + module name, e.g. qeval.rtn
# the one line loading logs about broken plugins (``qeval plugins`` itself leaves it out)
TROUBLED_SUMMARY = (
    "%d qeval plugin%s failed to load or %s problems (%s); run 'qeval plugins' for details"
)
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
        """``plugin 'qeval.bnb' (built-in)``: how messages name the plugin."""
        return f"plugin '{self.name}' ({self.source})"


def builtin_plugin_name(module_name: str) -> str:
    """``qeval_plugins.quantizers.hqq`` -> ``qeval.hqq``: a built-in's plugin name."""
    return BUILTIN_NAMESPACE + module_name.rsplit(".", 1)[-1]


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
    Loading logs one warning line naming the plugins with a load error or a problem, not one per
    problem: ``qeval plugins`` shows the details.
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
        """Load built-in and external plugins, collect their quantizers, and log one line
        naming the plugins that failed to load or have problems (if any)."""
        version = qeval_version()
        for module_name in BUILTIN_PLUGINS:
            self._add_plugin(builtin_plugin_name(module_name), "built-in", version, module_name)
        for entry_point in _selected_entry_points():
            dist = entry_point.dist
            self._add_plugin(
                entry_point.name,
                dist.metadata["Name"] if dist else "unknown",
                dist.version if dist else "?",
                entry_point,
            )
        self._warn_troubled()
        return self

    def troubled(self) -> list[PluginInfo]:
        """The plugins that failed to load or have problems (a disabled quantizer, a dropped
        alias). A built-in counts only with a load error: its other problems are notes on an
        external plugin's clash with it, and that plugin is counted."""
        return [
            info
            for info in self.plugins.values()
            if info.error or (info.problems and info.source != "built-in")
        ]

    def _warn_troubled(self) -> None:
        troubled = self.troubled()
        if troubled:
            names = ", ".join(info.name for info in troubled)
            logger.warning(
                TROUBLED_SUMMARY,
                len(troubled),
                "" if len(troubled) == 1 else "s",
                "has" if len(troubled) == 1 else "have",
                names,
            )

    def _add_plugin(self, name: str, source: str, version: str, target: Any) -> None:
        info = PluginInfo(name=name, source=one_line(source), version=one_line(version))
        reserved = source != "built-in" and name.startswith(BUILTIN_NAMESPACE)
        if name in self.plugins or reserved:
            self.plugins[_free_key(name, self.plugins) if name in self.plugins else name] = info
            why = (
                f"names starting with '{BUILTIN_NAMESPACE}' are reserved for qeval's built-in "
                f"plugins"
                if reserved
                else f"its name is taken by {self.plugins[name].describe()}"
            )
            self._fail(info, f"{why}; rename the entry point")
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

    def _unregister(self, owner: Registered) -> None:
        """Take back an external quantizer registered earlier (a name clash found later)."""
        name = owner.quantizer.name
        del self._by_name[name]
        for key in [key for key, value in self._canonical.items() if value == name]:
            del self._canonical[key]
        owner.plugin.quantizers.remove(name)

    def _disable(self, quantizer: Quantizer, info: PluginInfo, why: str) -> None:
        info.problems.append(why)
        aliases = quantizer.aliases if isinstance(quantizer.aliases, tuple | list) else ()
        keys = [quantizer.name, *aliases]
        for key in keys:
            if isinstance(key, str) and key.strip().lower() not in self._canonical:
                self._disabled.setdefault(key.strip().lower(), why)

    def _fail(self, info: PluginInfo, error: str) -> None:
        info.error = one_line(error)
        if self.manager.get_plugin(info.name) is not None and self.plugins.get(info.name) is info:
            self.manager.unregister(name=info.name)

    # lookup ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Canonical quantizer names, in registration order."""
        return list(self._by_name)

    def all(self) -> list[Registered]:
        return list(self._by_name.values())

    def aliases(self, name: str) -> list[str]:
        """The aliases that select quantizer ``name``: its declared ones less those dropped in
        a clash, in declaration order."""
        entry = self._by_name[name]
        return [alias for alias in entry.quantizer.aliases if self._canonical.get(alias) == name]

    def get(self, name: str) -> Registered:
        """The quantizer called ``name`` (or with that alias); QevalError with a hint if none."""
        key = str(name).strip().lower()
        if key in self._canonical:
            return self._by_name[self._canonical[key]]
        if key in self._disabled:
            raise QevalError(self._disabled[key])
        if key in self._contested:
            raise QevalError(self._contested[key])
        if ":" in key and key.partition(":")[0].strip() in self._canonical:
            raise QevalError(
                f"quantizer '{name}' is a spec, not a name: in lm_eval's --model_args write "
                f"{spec_model_args(str(name))} (qeval run --quantizers takes the spec as is)."
            )
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

    def dequantizer(self, owner: str | None = None, strict: bool = False) -> Dequantizer:
        """A :class:`Dequantizer` for one model, made by plugin ``owner`` (None: unquantized)."""
        return Dequantizer(self, owner, strict)

    def dequantize_weight(
        self, module: Any, shape: Any = None, layer: str | None = None, owner: str | None = None
    ) -> DenseWeight | None:
        """One layer's checked ``qeval_dequantize_weight`` answer: ``dequantizer(owner)(...)``."""
        return self.dequantizer(owner)(module, shape, layer)

    def builtin_layer_packages(self) -> set[str]:
        """The packages whose layer types the built-ins claim: ``torch`` and every module a
        built-in quantizer ``requires`` (bitsandbytes, hqq, optimum.quanto, torchao, ...)."""
        packages = {"torch"}
        for entry in self._by_name.values():
            if entry.plugin.source == "built-in":
                packages.update(entry.quantizer.requires)
        return packages


class Dequantizer:
    """Reads the effective dense weight of one model's layers through the plugins'
    ``qeval_dequantize_weight`` hooks, checked, remembering which plugin answered.

    Who is asked, in order, until one answers (not None):

    1. ``owner``, the plugin whose quantizer made the model (the run's quantizer's plugin);
    2. the built-in plugins, in pluggy's order (the plain-layer answer last);
    3. the other external plugins, in pluggy's order, but only for a layer type no built-in
       claims: a type defined in ``torch`` or in a package a built-in quantizer requires
       (:meth:`Registry.builtin_layer_packages`) is read by its built-in, so a foreign hook can
       never change a built-in's numbers.

    Every answer is checked in one place (:func:`answer_problem`): a floating-point
    ``torch.Tensor`` of the checkpoint weight's ``shape`` (when the caller knows it) with only
    finite values. A hook that raises or fails the check has its answers for that layer type
    refused for the rest of the process, with one warning naming the plugin, and the next
    plugin is asked (the layer is missing when none is left); with ``strict`` (the contract
    checker) it is a QevalError instead. A refusal lasts as long as this reader, one model's
    pass: an answer that was refused because that model's weights are not finite says nothing
    about the next model's. ``answered_by`` maps each layer type
    (``module.QualName``) to the plugin that answered for it, as the results record it.
    """

    def __init__(self, registry: Registry, owner: str | None = None, strict: bool = False):
        self.registry, self.owner, self.strict = registry, owner, strict
        self.answered_by: dict[str, str] = {}
        self._claimed = registry.builtin_layer_packages()
        self._refused: dict[tuple[str, type], str] = {}  # (plugin, layer type) -> bad answer

    def __call__(
        self, module: Any, shape: Any = None, layer: str | None = None
    ) -> DenseWeight | None:
        """``module``'s checked dense weight and its plugin, or None when no plugin reads it.

        ``shape``: the checkpoint weight's shape, checked when given; ``layer``: the module's
        name, for messages."""
        kind = type(module)
        for impl in self._ordered(kind):
            plugin = impl.plugin_name
            if (plugin, kind) in self._refused:
                continue
            layer_text = f"layer '{layer or '?'}' ({kind.__name__})"
            who = self._describe(plugin)
            try:
                answer = impl.function(**({"module": module} if "module" in impl.argnames else {}))
            except Exception as error:
                self._refuse(
                    plugin,
                    kind,
                    f"{who}: qeval_dequantize_weight raised {_describe(error)} on {layer_text}",
                )
                continue
            if answer is None:
                continue
            problem = answer_problem(answer, shape)
            if problem is None:
                self.answered_by[_type_name(kind)] = plugin
                return DenseWeight(answer, plugin)
            self._refuse(
                plugin,
                kind,
                f"{who}: qeval_dequantize_weight returned for {layer_text} {problem}",
            )
        return None

    def _describe(self, plugin: str) -> str:
        """``plugin 'hqq' (hqq-ext)``: the plugin with its source, so a third-party entry point
        named like a built-in (``qeval.hqq``) is never read as the built-in."""
        info = self.registry.plugins.get(plugin)
        return info.describe() if info else f"plugin '{plugin}'"

    def _ordered(self, kind: type) -> list[Any]:
        """The hook implementations to ask for a layer of type ``kind``, in order."""
        impls = list(reversed(self.registry.manager.hook.qeval_dequantize_weight.get_hookimpls()))
        plugins = self.registry.plugins
        builtin = {name for name, info in plugins.items() if info.source == "built-in"}
        module = kind.__module__
        claimed = any(module == pkg or module.startswith(pkg + ".") for pkg in self._claimed)
        owner = [impl for impl in impls if impl.plugin_name == self.owner]
        others = [impl for impl in impls if impl.plugin_name != self.owner]
        return (
            owner
            + [impl for impl in others if impl.plugin_name in builtin]
            + ([] if claimed else [impl for impl in others if impl.plugin_name not in builtin])
        )

    def _refuse(self, plugin: str, kind: type, message: str) -> None:
        if self.strict:
            raise QevalError(f"{message}: return the dense weight as the hook's docstring says.")
        self._refused[(plugin, kind)] = message
        logger.warning(
            "%s; its answers for %s are not used (the next plugin's answer is, or the layer is "
            "left out); unless the model's own weights are not finite, report it to the plugin's "
            "author",
            message,
            kind.__name__,
        )


def answer_problem(answer: Any, shape: Any = None) -> str | None:
    """What is wrong with a ``qeval_dequantize_weight`` answer, or None when it is usable: a
    floating-point ``torch.Tensor``, of ``shape`` when given, with only finite values."""
    import torch

    if not isinstance(answer, torch.Tensor) or not answer.is_floating_point():
        kind = answer.dtype if isinstance(answer, torch.Tensor) else type(answer).__name__
        return f"a {kind}, not a floating-point torch.Tensor"
    if shape is not None and tuple(answer.shape) != tuple(shape):
        return (
            f"shape {list(answer.shape)}, but the checkpoint's weight has shape {list(shape)} "
            f"(the dense weight belongs in the checkpoint's layout)"
        )
    finite = torch.isfinite(answer.detach())
    if not bool(finite.all()):
        bad = answer.numel() - int(finite.sum())
        return f"non-finite values ({bad} of {answer.numel()} are NaN or ±inf)"
    return None


def _type_name(kind: type) -> str:
    """``torch.nn.modules.linear.Linear``: a layer type as the results record it."""
    return f"{kind.__module__}.{kind.__qualname__}"


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
            f"({problems[0]}; got {one_line(repr(scheme))[:120]})."
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
    return one_line(f"{type(error).__name__}: {error}")


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
    builtins = {builtin_plugin_name(module) for module in BUILTIN_PLUGINS}
    short = {name.removeprefix(BUILTIN_NAMESPACE): name for name in builtins}
    for name in sorted(wanted - installed):  # a typo would otherwise load nothing, silently
        if name in builtins or name in short:
            logger.warning(
                "%s names '%s', the built-in plugin '%s': built-ins always load; the variable "
                "selects external plugins (entry-point names) only.",
                PLUGINS_ENV,
                name,
                short.get(name, name),
            )
            continue
        logger.warning(
            "%s names '%s', which no installed qeval plugin has.%s",
            PLUGINS_ENV,
            one_line(name),
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
