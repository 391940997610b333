"""TorchScript archives (what ``torch.jit.save`` writes; OpenAI's CLIP ``.pt`` releases) read
into the flat state dict ``torch.jit.load(f).state_dict()`` gives (same keys, order, dtypes,
values), without PyTorch and without running anything from the archive. Framework-free.

An archive is a ``torch.save``-like zip (``torch_zip`` reads it, bounds and CRCs included) whose
``data.pkl`` pickles the module tree: each module an object of a compiled class
(``GLOBAL '__torch__.<path> <Name>'``, ``EMPTY_TUPLE``, ``NEWOBJ``, then ``BUILD`` with the dict
of its attributes in the class's attribute order), tensors by persistent ids into ``data/<N>``
as in a ``.pth``. Here each ``__torch__`` class resolves to an inert record type
(``ScriptObject``): ``NEWOBJ`` makes an empty record, ``BUILD`` stores the state once, and any
call of the class (``REDUCE``, which TorchScript writes only for Enum values) is refused, as is
every global the ``.pth`` reader refuses. Nothing is imported, constructed or ``__setstate__``-d.

Which attributes are parameters and buffers is recorded nowhere but in the class declarations
of ``code/`` (``__parameters__ = ["weight", "bias", ]``, ``__buffers__ = [...]``, then
``name : Type`` per attribute): a plain tensor attribute and a buffer pickle alike. So the
declarations, and only they, are read as data: ``_declarations`` takes, for each top-level
``class Name(...):`` line of a record (at most ``CODE_LIMIT`` bytes inflated), the lines up to
its first method and the names of its methods (``def name(`` at the class's indent), with one
regular expression per line form ``python_print.cpp`` writes; any other line is refused. Method
bodies are never parsed, let alone run. ``constants.pkl`` and ``.debug_pkl`` are not read.

The state dict follows ``torch.jit``'s slot policies: per module its parameters (declared
parameters holding a tensor), then its buffers (declared buffers typed ``Tensor``; TorchScript
keeps no ``persistent=False``, so those are in it too), in attribute order, then its submodules'
entries; a tensor shared by two modules is listed under each key. A module whose class defines
``__getstate__`` and ``__setstate__`` gets its state from its own code, which is not run: refused
(``UnsafePickleError``). The tree is walked to at most ``DEPTH_LIMIT`` levels and
``VISIT_LIMIT`` modules and entries (a pickle can share one module many times over).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from weight_convert import safe_pickle, torch_pickle
from weight_convert.errors import CheckpointError, NotACheckpointError, UnsafePickleError
from weight_convert.safe_pickle import PlainDict, of_type, refuse
from weight_convert.torch_pickle import TensorRef, Unsupported

if TYPE_CHECKING:
    from weight_convert.torch_zip import Archive, Record

__all__ = [
    "CLASS_LIMIT",
    "CODE_LIMIT",
    "DEPTH_LIMIT",
    "VISIT_LIMIT",
    "Declaration",
    "ScriptObject",
    "state_dict",
]

#: the largest ``code/`` record read (inflated); CLIP ViT-L/14's biggest is ~0.1 MiB
CODE_LIMIT = 16 << 20
#: the most distinct ``__torch__`` classes one ``data.pkl`` may name (a traced model has one
#: per module instance: ~1,000 for CLIP ViT-L/14)
CLASS_LIMIT = 1 << 14
#: the deepest module tree walked (ResNets and ViTs: under 10)
DEPTH_LIMIT = 100
#: the most modules visited plus entries made (CLIP ViT-L/14: ~1,000)
VISIT_LIMIT = 1 << 16

_UNSET = object()
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_QUALNAME = re.compile(rf"__torch__(\.{_NAME})*\Z")


class _ScriptClass(type):
    """The type of an archive class's record type: calling it (``REDUCE``, or ``OBJ`` with
    arguments) is refused; ``NEWOBJ`` reaches ``ScriptObject.__new__`` only."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise refuse(
            f"the archive class {cls.qualname[:120]}",
            "as a function: TorchScript makes its objects by NEWOBJ only",
        )


class ScriptObject(metaclass=_ScriptClass):
    """An object of a ``__torch__`` class of the archive, inert: its class's ``qualname`` and
    the state its ``BUILD`` gave (set once; the archive class's ``__setstate__`` never runs)."""

    __slots__ = ("state",)
    qualname = "__torch__"

    def __new__(cls, *args: Any, **kwargs: Any) -> ScriptObject:
        if args or kwargs:
            raise refuse(f"the archive class {cls.qualname[:120]}", "NEWOBJ with arguments")
        obj = object.__new__(cls)
        obj.state = _UNSET
        return obj

    def __setstate__(self, state: Any) -> None:
        if self.state is not _UNSET:
            raise UnsafePickleError(
                f"its pickle sets the state of a {self.qualname[:120]} twice (no pickler writes "
                "that); nothing from the file ran"
            )
        self.state = state


def _list(call: str) -> Any:
    def make(items: Any) -> list:
        if not isinstance(items, list):
            raise refuse(call, f"with {of_type(items)}, not a list")
        return items

    return make


def _type_tag(value: Any, annotation: Any) -> Any:
    """``restore_type_tag(list or dict, 'Dict[str, Tensor]')``: the container as it is."""
    if not isinstance(value, (list, dict)) or not isinstance(annotation, str):
        raise refuse("torch.jit._pickle.restore_type_tag", f"with {of_type(value)}")
    return value


#: what a ``data.pkl`` may name besides ``torch.save``'s globals and the ``__torch__`` classes:
#: the builders of typed lists and the type tags of generic containers (pickler.cpp)
_JIT_GLOBALS = {
    **torch_pickle.ALLOWED_GLOBALS,
    **safe_pickle.stand_ins(
        {
            ("torch.jit._pickle", name): _list(f"torch.jit._pickle.{name}")
            for name in ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist")
        }
    ),
    **safe_pickle.stand_ins({("torch.jit._pickle", "restore_type_tag"): _type_tag}),
}


class _Unpickler(torch_pickle.Unpickler):
    """``torch_pickle.Unpickler`` (storages as persistent ids, its stand-ins) that also
    resolves ``__torch__`` classes, each to its own ``ScriptObject`` record type."""

    def __init__(self, file, check_storage) -> None:
        super().__init__(file, check_storage)
        self._allowed = _JIT_GLOBALS
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module != "__torch__" and not module.startswith("__torch__."):
            return super().find_class(module, name)
        qualname = f"{module}.{name}"
        known = self._classes.get(qualname)
        if known is not None:
            return known
        if len(qualname) > 1000 or not _QUALNAME.match(qualname):
            raise CheckpointError(f"corrupt pickle: class name {qualname[:80]!r}")
        if len(self._classes) >= CLASS_LIMIT:
            raise CheckpointError(f"refused: a data.pkl of more than {CLASS_LIMIT} classes")
        made = _ScriptClass(name, (ScriptObject,), {"__slots__": (), "qualname": qualname})
        self._classes[qualname] = made
        return made


# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Declaration:
    """What ``code/`` declares of a class: its base (``Module``, ``ModuleInterface``,
    ``NamedTuple``, ``Interface``, ``Enum``; "" for a plain class), attributes in order with
    their type text, parameter and buffer names, and whether it defines ``__getstate__`` and
    ``__setstate__`` (its objects' state is then made by its code)."""

    qualname: str
    base: str
    attributes: tuple[tuple[str, str], ...]
    parameters: frozenset[str]
    buffers: frozenset[str]
    custom_state: bool


_CLASS = re.compile(rf"class ({_NAME})(?:\(({_NAME})\))?:\Z")
_NAMES = re.compile(r'  (__parameters__|__buffers__|__forward_pre_hooks__|__forward_hooks__) = '
                    r'\[((?:"[^"\\\n]*", )*)\]\Z')  # fmt: skip
_ATTRIBUTE = re.compile(rf"  ({_NAME}) : (\S.*)\Z")
_ANNOTATION = re.compile(r'  __annotations__\["([^"\\\n]*)"\] = (\S.*)\Z')
_DEF = re.compile(rf"  def ({_NAME})\(")


def _declarations(module: str, text: str) -> dict[str, Declaration]:
    """The class declarations of the ``code/`` record of ``module`` (``__torch__.a.b`` for
    ``code/__torch__/a/b.py``), by qualified name; ``CheckpointError`` for a declaration line
    of no form ``python_print.cpp`` writes."""
    out: dict[str, Declaration] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        head = _CLASS.match(lines[i])
        i += 1
        if head is None:
            continue
        qualname = f"{module}.{head[1]}"
        names: dict[str, frozenset[str]] = {}
        attributes: list[tuple[str, str]] = []
        methods: set[str] = set()
        while i < len(lines) and lines[i].startswith(" "):
            line = lines[i]
            i += 1
            if methods or line.startswith("  def "):  # methods: their names only
                method = _DEF.match(line)
                if method:
                    methods.add(method[1])
                continue
            listed, attribute, annotation = (
                _NAMES.match(line),
                _ATTRIBUTE.match(line),
                _ANNOTATION.match(line),
            )
            if listed:
                names[listed[1]] = frozenset(re.findall(r'"([^"]*)"', listed[2]))
            elif annotation:
                attributes.append((annotation[1], annotation[2]))
            elif attribute and " = " not in attribute[2]:
                attributes.append((attribute[1], attribute[2]))
            elif not (attribute or line == "  __annotations__ = []"):  # constants: skipped
                raise CheckpointError(
                    f"unreadable declaration of {qualname[:120]} in code/: {line[:80]!r}"
                )
        out[qualname] = Declaration(
            qualname,
            head[2] or "",
            tuple(attributes),
            names.get("__parameters__", frozenset()),
            names.get("__buffers__", frozenset()),
            {"__getstate__", "__setstate__"} <= methods,
        )
    return out


class _Code:
    """The declarations of an archive's ``code/`` records, each record read once and only when
    a class of it is needed."""

    def __init__(self, archive: Archive, records: dict[str, Record]) -> None:
        self._archive, self._records = archive, records
        self._parsed: dict[str, dict[str, Declaration]] = {}

    def declaration(self, qualname: str) -> Declaration:
        module = qualname.rpartition(".")[0]
        if module not in self._parsed:
            record = self._records.get(module.replace(".", "/") + ".py")
            if record is None:
                self._parsed[module] = {}
            else:
                data = self._archive.text(record, CODE_LIMIT)
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise CheckpointError(f"corrupt code/ record {record.name[:80]}") from None
                self._parsed[module] = _declarations(module, text)
        found = self._parsed[module].get(qualname)
        if found is None:
            raise CheckpointError(
                f"corrupt TorchScript archive: no declaration of class {qualname[:120]} in code/"
            )
        return found


# --------------------------------------------------------------------------- the state dict


class _Walk:
    def __init__(self, code: _Code) -> None:
        self.code, self.out, self.visits = code, PlainDict(), 0

    def module(self, obj: ScriptObject, prefix: str, depth: int) -> None:
        if depth > DEPTH_LIMIT:
            raise CheckpointError(
                f"refused: a module tree nested deeper than {DEPTH_LIMIT} levels (or a cycle), "
                f"at {prefix[:100]}"
            )
        declared = self.code.declaration(obj.qualname)
        if declared.custom_state:
            raise UnsafePickleError(
                f"module {prefix[:-1] or '(root)'} of class {obj.qualname[:100]} gets its state "
                "from its own __setstate__, which is never run; nothing from the file ran"
            )
        state = obj.state
        names = [name for name, _ in declared.attributes]
        if not isinstance(state, dict) or list(state) != names:
            raise CheckpointError(
                f"corrupt TorchScript archive: the state of {prefix[:-1] or '(root)'} is not "
                f"the attributes its class {obj.qualname[:100]} declares"
            )
        tensors = (TensorRef, Unsupported)
        for name in names:  # parameters: declared ones holding a tensor
            if name in declared.parameters and isinstance(state[name], tensors):
                self.add(prefix + name, state[name])
        for name, kind in declared.attributes:  # buffers: declared ones typed Tensor
            if name in declared.buffers and kind == "Tensor":
                if not isinstance(state[name], tensors):
                    raise CheckpointError(
                        f"corrupt TorchScript archive: buffer {prefix}{name} holds no tensor"
                    )
                self.add(prefix + name, state[name])
        for name in names:
            value = state[name]
            if isinstance(value, ScriptObject) and self._is_module(value):
                self.module(value, f"{prefix}{name}.", depth + 1)

    def _is_module(self, obj: ScriptObject) -> bool:
        self.count()
        if obj.qualname.startswith("__torch__.torch.classes."):  # C++ classes: no code
            return False
        return self.code.declaration(obj.qualname).base == "Module"

    def add(self, key: str, value: Any) -> None:
        self.count()
        self.out[key] = value

    def count(self) -> None:
        self.visits += 1
        if self.visits > VISIT_LIMIT:
            raise CheckpointError(
                f"refused: a module tree of more than {VISIT_LIMIT} modules and tensors (one "
                "module shared many times over?)"
            )


def state_dict(archive: Archive, data: bytes, code: dict[str, Record]) -> PlainDict:
    """The flat ``{key: TensorRef}`` of the TorchScript archive whose ``data.pkl`` bytes are
    ``data`` and whose ``code/`` records (by name under ``code/``) are ``code``, in
    ``torch.jit.load(f).state_dict()``'s order."""
    root = safe_pickle.load(_Unpickler(io.BytesIO(data), archive.check_storage))
    walk = _Walk(_Code(archive, code))
    if not isinstance(root, ScriptObject) or not walk._is_module(root):
        what = root.qualname if isinstance(root, ScriptObject) else type(root).__name__
        raise NotACheckpointError(
            f"{archive.path} is a TorchScript archive whose data.pkl holds a {what[:100]}, "
            "not a module"
        )
    walk.module(root, "", 0)
    return walk.out
