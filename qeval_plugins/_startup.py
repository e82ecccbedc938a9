"""Make the stock ``lm_eval`` see ``--model qeval`` (run at interpreter start-up by a .pth file).

lm-eval 0.4.13 has no entry-point discovery for models: a backend is only found if something
imports the module that registers it. The wheel installs ``qeval_lm_eval.pth``, which imports this
module in every interpreter of the environment. It does almost nothing: it adds an import hook that
waits for ``lm_eval.api.registry`` to be imported and then registers ``qeval`` as a *lazy*
placeholder (``qeval_plugins.backend.lm:QevalLM``), after making sure lm-eval's own models are
registered
first (lm-eval only auto-registers them when its registry is empty). Nothing heavy is imported
unless ``--model qeval`` is actually used. It is idempotent (a venv may process .pth files twice)
and never raises: a failure here must not break the interpreter. It imports only modules the
interpreter has already loaded (no typing, no importlib.abc) to keep start-up cost near zero.
"""

import importlib.machinery
import sys

REGISTRY_MODULE = "lm_eval.api.registry"
BACKEND_TARGET = "qeval_plugins.backend.lm:QevalLM"


def register_backend(registry_module) -> None:
    """Register lm-eval's own models, then ``qeval`` as a lazy placeholder."""
    import lm_eval.models  # noqa: F401  (registers hf, dummy, ... so they stay available)

    if "qeval" not in registry_module.model_registry:
        registry_module.model_registry.register("qeval", target=BACKEND_TARGET)


class _RegistryLoader:
    """Runs the real loader of lm_eval.api.registry, then registers the backend."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            register_backend(module)
        except Exception as error:  # never break lm-eval's import
            print(f"qeval: could not register the lm-eval backend: {error}", file=sys.stderr)


class _RegistryFinder:
    """Finds lm_eval.api.registry through the normal path finder and wraps its loader."""

    _qeval_finder = True

    def find_spec(self, fullname, path, target=None):
        if fullname != REGISTRY_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegistryLoader(spec.loader)
        return spec


def install() -> None:
    """Install the import hook once; register at once if lm-eval's registry is already loaded."""
    try:
        if any(getattr(finder, "_qeval_finder", False) for finder in sys.meta_path):
            return
        if REGISTRY_MODULE in sys.modules:
            register_backend(sys.modules[REGISTRY_MODULE])
            return
        sys.meta_path.insert(0, _RegistryFinder())
    except Exception:  # start-up must never fail because of qeval
        pass


install()
