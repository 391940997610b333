"""The zoo's one registry. Framework-free.

- ``FAMILIES``: family name -> ``zoo.family.Family`` (the framework-free spec), registered by the
  spec modules in ``zoo/families/``, which are found by listing that package.
- ``VARIANTS``: variant name -> ``Variant`` (a named config), registered by the same modules.
- model classes: ``@register_model(family, framework)`` on the class in each framework's model
  module (``zoo.models.<module>``, ``ports.keras.models.<module>``, ``ports.flax.models.<module>``;
  ``<module>`` is ``Family.module``). ``model_class(family, framework)`` imports that module on
  first use and returns the class, so every framework's ``create_model`` finds its class here.

Adding a family touches none of this: its spec module registers the family and its variants, its
three model modules register their classes.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from zoo.family import Family, Variant

__all__ = [
    "FAMILIES",
    "FRAMEWORKS",
    "VARIANTS",
    "Registry",
    "import_package_modules",
    "model_class",
    "register_model",
]

T = TypeVar("T")

#: framework -> the package holding its model modules (one module per family, same name)
FRAMEWORKS = {"torch": "zoo.models", "keras": "ports.keras.models", "flax": "ports.flax.models"}


class Registry(Generic[T]):
    """Name -> item, with a clear error for unknown names. Names are the same in every framework.

    ``load`` (optional) is called once, before the first look-up, to import the modules that
    register the items.
    """

    def __init__(self, kind: str, load: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._load = load

    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None  # registering modules may read the registry
            try:
                load()
            except BaseException:
                self._load = load  # the next look-up raises the same error, not a partial list
                raise
        return self._items

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise KeyError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def __getitem__(self, name: str) -> T:
        items = self._loaded()
        try:
            return items[name]
        except KeyError:
            known = ", ".join(sorted(items)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._loaded()))

    def __len__(self) -> int:
        return len(self._loaded())

    def items(self):
        return list(self._loaded().items())

    def values(self) -> list[T]:
        return list(self._loaded().values())


def import_package_modules(package: str) -> list[str]:
    """Import every public module (name not starting with ``_``) of ``package``, in name order;
    return their names. How family modules are found: adding a file is registering it."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


def _load_families() -> None:
    import_package_modules("zoo.families")


FAMILIES: Registry[Family] = Registry("family", _load_families)
VARIANTS: Registry[Variant] = Registry("variant", lambda: FAMILIES._loaded())

#: (family, framework) -> model class
_MODELS: dict[tuple[str, str], type] = {}


def register_model(family: str, framework: str) -> Callable[[type], type]:
    """Class decorator: ``cls`` is ``family``'s model in ``framework`` ("torch", "keras",
    "flax"). Its name must be the family's model name (the same in every framework)."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; known: {', '.join(FRAMEWORKS)}")

    def decorate(cls: type) -> type:
        expected = FAMILIES[family].model
        if cls.__name__ != expected:
            raise TypeError(f"{family}'s model is named {expected}, not {cls.__name__}")
        key = (family, framework)
        if _MODELS.get(key, cls) is not cls:
            raise KeyError(f"{family} has a {framework} model already: {_MODELS[key]}")
        _MODELS[key] = cls
        return cls

    return decorate


def model_class(family: str | Any, framework: str) -> type:
    """The model class of ``family`` (a name, or a config whose ``family`` names it) in
    ``framework``, importing the framework's module of the family on first use."""
    name = family if isinstance(family, str) else family.family
    spec = FAMILIES[name]
    if (name, framework) not in _MODELS:
        if framework not in FRAMEWORKS:
            raise ValueError(f"unknown framework {framework!r}; known: {', '.join(FRAMEWORKS)}")
        importlib.import_module(f"{FRAMEWORKS[framework]}.{spec.module_name}")
    try:
        return _MODELS[(name, framework)]
    except KeyError:
        where = f"{FRAMEWORKS[framework]}.{spec.module_name}"
        raise KeyError(f"{where} registers no {framework} model for {name}") from None


def model_family(model: Any) -> str:
    """The family whose model ``model`` is (its class was registered for it), else the family its
    config names (a part of a model, e.g. a backbone, that takes the family's config)."""
    for (family, _), cls in _MODELS.items():
        if type(model) is cls:
            return family
    return model.config.family


def framework_modules(framework: str) -> list[str]:
    """Import every public module of ``framework``'s models package (the families' model
    modules and their parts: every class is registered, e.g. for loading ``.keras`` files);
    return the modules' names."""
    return import_package_modules(FRAMEWORKS[framework])


@functools.cache
def framework_exports(framework: str) -> dict[str, Any]:
    """Name -> object of what the modules of ``framework``'s models package export
    (``__all__``): the lazy attributes of ``zoo.models``, ``ports.keras.models`` and
    ``ports.flax.models``, collected once (the package's modules do not change while it runs).
    Two modules exporting one name for different objects is an error."""
    out: dict[str, Any] = {}
    where: dict[str, str] = {}
    for name in framework_modules(framework):
        module = importlib.import_module(f"{FRAMEWORKS[framework]}.{name}")
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            if attr in out and out[attr] is not obj:
                raise ImportError(
                    f"{FRAMEWORKS[framework]}: {where[attr]} and {name} both export {attr}"
                )
            out[attr], where[attr] = obj, name
    return out


def lazy_exports(
    framework: str, module: str, namespace: dict[str, Any], public: list[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a framework's models package (``module``, whose own
    names are ``namespace`` and public ones ``public``): every family module's exports are
    attributes of the package, imported on first use (PEP 562), and in its ``__all__``."""

    def __getattr__(name: str) -> Any:
        if name == "__all__":
            return [*public, *sorted(framework_exports(framework))]
        exports = framework_exports(framework)
        if name in exports:
            return exports[name]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*namespace, *framework_exports(framework)})

    return __getattr__, __dir__


__all__ += ["framework_exports", "framework_modules", "lazy_exports", "model_family"]
