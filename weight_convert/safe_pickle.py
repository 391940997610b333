"""Unpickling without running code from the file: the one restricted unpickler that detectron2's
``.pkl`` files and ``torch.save``'s pickles are read with. Framework-free (NumPy).

A pickle can call any importable function while it loads. ``RestrictedUnpickler`` resolves only
the globals of its table and refuses every other one with ``UnsafePickleError`` before anything
is called. Even an allowed function does what it is asked: ``_codecs.encode(x, 'hex')`` doubles
its input (30 nested calls: 2 GiB from 1 KB), ``bytearray(n)`` and ``numpy.ndarray(shape)``
allocate any size, ``str(a list of references to one string)`` any multiple of it. So no table
holds the real function: each allowed global is a ``StandIn`` that accepts exactly the arguments
a pickler writes for a value and makes that value from data the pickle holds, refusing any other
call with ``UnsafePickleError`` (exit 8; data that does not fill what it declares is a corrupt
file, ``CheckpointError``). A ``StandIn`` is no type (``NEWOBJ`` cannot reach a real type's
``__new__``) and, like every record a stand-in makes (``Sealed``), takes no ``BUILD``: nothing
the pickle does can change what a stand-in checked.

The pickle machine itself is bounded before it runs (``check_opcodes``, a walk over its opcodes
that skips their data): at most ``OPCODE_LIMIT`` opcodes (one byte of file can make an object of
~80 bytes: 8 Mi bytes of ``}`` were 693 MB) and memo indices in the sequence picklers write them
(CPython's unpickler sizes its memo by the largest index: 12 bytes could ask for 16 GiB).
``load`` turns every other failure (bad opcode, truncation, a declared size beyond memory) into
one ``CheckpointError`` line.
"""

from __future__ import annotations

import pickle
import pickletools
import struct
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from weight_convert.errors import CheckpointError, UnsafePickleError

__all__ = [
    "BASE_GLOBALS",
    "OPCODE_LIMIT",
    "PLAIN_GLOBALS",
    "PlainDict",
    "RestrictedUnpickler",
    "Sealed",
    "StandIn",
    "check_opcodes",
    "load",
    "of_type",
    "refuse",
    "stand_ins",
]

#: the most opcodes one pickle may hold: a ``torch.save`` state dict takes ~30 a tensor, a pickle
#: of NumPy arrays ~30 an array (so 50,000 tensors fit); the worst a pickle within it can make,
#: 2 Mi empty dicts, peaked at 194 MB (the conversion's own ~36 MB included)
OPCODE_LIMIT = 1 << 21
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def refuse(call: str, detail: str) -> UnsafePickleError:
    """The error for a call of an allowed global with arguments no pickler writes."""
    return UnsafePickleError(
        f"its pickle calls {call} as no pickler writes it ({detail}); nothing from the file ran"
    )


def of_type(value: Any) -> str:
    """``value``'s type as a message names it (``numpy.ndarray`` for an array)."""
    name = "numpy.ndarray" if isinstance(value, np.ndarray) else type(value).__name__
    return f"an argument of type {name}"


class Sealed:
    """What a stand-in makes (and the stand-ins themselves): a pickle's ``BUILD`` on it, which
    would set its attributes after it was checked, is refused."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(
            f"its pickle sets the state of a {type(self).__name__} after it was made (no "
            "pickler writes that); nothing from the file ran"
        )


class StandIn(Sealed):
    """An allowed global: a call runs ``func``, which checks its arguments. Not a type, so
    ``NEWOBJ`` finds no ``__new__`` to call; ``BUILD`` on it is refused (``Sealed``)."""

    __slots__ = ("name", "func")

    def __init__(self, name: str, func: Callable[..., Any]) -> None:
        self.name, self.func = name, func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"StandIn({self.name})"


def stand_ins(table: Mapping[tuple[str, str], Callable[..., Any]]) -> dict[tuple[str, str], Any]:
    """``table``'s functions, each as the ``StandIn`` of its global."""
    return {key: StandIn(".".join(key), func) for key, func in table.items()}


class PlainDict(dict):
    """``collections.OrderedDict`` stand-in: a dict (insertion-ordered). ``torch.save`` sets a
    state dict's ``_metadata`` by ``BUILD``; that is dropped (nothing is set on an object)."""

    def __setstate__(self, state: Any) -> None:
        pass


def _ordered_dict(items: Any = ()) -> PlainDict:
    """``OrderedDict()`` (Python 3 picklers add the items after), ``OrderedDict([[k, v], ...])``
    (Python 2's)."""
    if isinstance(items, dict):
        return PlainDict(items)
    if not isinstance(items, (list, tuple)) or not all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in items
    ):
        raise refuse("collections.OrderedDict", f"with {of_type(items)}")
    return PlainDict(items)


def _encode(text: Any, encoding: Any = None, *rest: Any) -> bytes:
    """``_codecs.encode(str, 'latin1')``: how protocols 0-2 write ``bytes``; no other codec
    (``'hex'`` doubles its input, ``'zlib'`` ...)."""
    if type(text) is not str or encoding not in ("latin1", "latin-1") or rest:
        what = encoding if isinstance(encoding, str) else type(encoding).__name__
        raise refuse("_codecs.encode", f"encoding {str(what)[:20]!r}, not 'latin1' text")
    return text.encode("latin-1")


def _bytes(*args: Any) -> bytes:
    """``bytes()``: how protocols 0-2 write empty ``bytes`` (an empty array's data)."""
    if args:
        raise refuse("builtins.bytes", "with an argument: a size allocates")
    return b""


def _bytearray(*args: Any) -> bytearray:
    """``bytearray(bytes)`` (protocol 3+) or ``bytearray(str, 'latin-1')`` (2): never a size."""
    if not args:
        return bytearray()
    if len(args) == 1 and isinstance(args[0], bytes):
        return bytearray(args[0])
    if len(args) == 2 and args[1] in ("latin1", "latin-1"):
        return bytearray(_encode(args[0], "latin1"))
    raise refuse("builtins.bytearray", f"with {of_type(args[0])}: a size allocates")


def _items(name: str, items: Any) -> list | tuple:
    if not isinstance(items, (list, tuple)):
        raise refuse(name, f"with {of_type(items)}, not a list of items")
    return items


def _set(items: Any = ()) -> set:
    return set(_items("builtins.set", items))


def _frozenset(items: Any = ()) -> frozenset:
    return frozenset(_items("builtins.frozenset", items))


def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if type(real) not in (int, float) or type(imag) not in (int, float):
        raise refuse("builtins.complex", "with arguments that are no numbers")
    return complex(real, imag)


#: the builtins a ``torch.save`` pickle may name (protocol 2 spells the module ``__builtin__``)
PLAIN_GLOBALS = stand_ins(
    {
        (module, name): func
        for module in ("builtins", "__builtin__")
        for name, func in (
            ("set", _set),
            ("frozenset", _frozenset),
            ("complex", _complex),
            ("bytearray", _bytearray),
        )
    }
)

#: what every pickle here may name besides its own kind's globals: the ``bytes`` of protocols
#: 0-2 and ``collections.OrderedDict``
BASE_GLOBALS = stand_ins(
    {
        ("collections", "OrderedDict"): _ordered_dict,
        ("_codecs", "encode"): _encode,
        ("builtins", "bytes"): _bytes,
        ("__builtin__", "bytes"): _bytes,
    }
)


_OPCODES = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
#: how the length of a counted argument (bytes, str, long) is written, by its descriptor's n
_LENGTHS = {
    pickletools.TAKEN_FROM_ARGUMENT1: "<B",
    pickletools.TAKEN_FROM_ARGUMENT4: "<i",
    pickletools.TAKEN_FROM_ARGUMENT4U: "<I",
    pickletools.TAKEN_FROM_ARGUMENT8U: "<Q",
}


def _argument(file, arg: pickletools.ArgumentDescriptor) -> Any:
    """An opcode's argument read from ``file``; a counted one (bytes, text, a long) is skipped,
    not read (None)."""
    if arg.n >= 0 or arg.n == pickletools.UP_TO_NEWLINE:
        return arg.reader(file)
    layout = _LENGTHS[arg.n]
    raw = file.read(struct.calcsize(layout))
    if len(raw) < struct.calcsize(layout) or struct.unpack(layout, raw)[0] < 0:
        raise CheckpointError(f"truncated or corrupt pickle (a {arg.name} cut short)")
    file.seek(struct.unpack(layout, raw)[0], 1)
    return None


def check_opcodes(file) -> None:
    """Walk the pickle at ``file``'s position to its STOP, running nothing and skipping its
    data, then rewind: ``CheckpointError`` for more than ``OPCODE_LIMIT`` opcodes or a memo
    index out of the sequence picklers write (each new one the count so far)."""
    start, memo = file.tell(), 0
    for _ in range(OPCODE_LIMIT):
        opcode = _OPCODES.get(file.read(1))
        if opcode is None:
            raise CheckpointError("truncated or corrupt pickle (an unknown opcode, or no STOP)")
        arg = None if opcode.arg is None else _argument(file, opcode.arg)
        if opcode.name in _MEMO_PUTS:
            if arg > memo:
                raise CheckpointError(f"corrupt pickle: memo index {arg} out of sequence")
            memo += arg == memo
        elif opcode.name == "MEMOIZE":
            memo += 1
        elif opcode.name == "STOP":
            file.seek(start)
            return
    raise CheckpointError(f"refused: a pickle of more than {OPCODE_LIMIT} opcodes (~40 a tensor)")


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ``allowed`` (module, name) globals; no persistent ids unless a subclass
    defines them. ``load`` checks the opcodes first (``check_opcodes``): ``file`` must seek."""

    def __init__(self, file, allowed: Mapping[tuple[str, str], Any]) -> None:
        super().__init__(file, encoding="latin1")
        self._file, self._allowed = file, allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"its pickle would run code (it imports {module[:60]}.{name[:60]}); only tensors "
                "and plain containers are loaded, nothing from the file ran"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused a persistent id: not a plain pickle of arrays")

    def load(self) -> Any:
        check_opcodes(self._file)
        return super().load()


def load(unpickler: pickle.Unpickler) -> Any:
    """``unpickler.load()`` with every failure one line: ``UnsafePickleError`` for a refused
    global or call, ``CheckpointError`` for anything malformed."""
    try:
        return unpickler.load()
    except (UnsafePickleError, CheckpointError):
        raise
    except RecursionError:
        raise CheckpointError("corrupt pickle: nested too deeply") from None
    except MemoryError:
        raise CheckpointError("corrupt pickle: it declares more data than it holds") from None
    except Exception as e:  # noqa: BLE001 - any malformed pickle is one user-facing error
        raise CheckpointError(
            f"truncated or corrupt pickle ({type(e).__name__}: {str(e)[:120]})"
        ) from None
