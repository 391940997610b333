"""What can go wrong in a conversion: one class per kind of bad input, each with the CLI's exit
code. Framework-free.

The CLI prints ``weight-convert: error: <message>`` (one line, ``one_line``: control characters
escaped, at most ``LINE_CHARS`` characters; key names in the lists are cut at ``KEY_CHARS``) and
exits with the error's ``exit_code``; anything that is not a ``ConvertError`` (or an ``OSError``
while writing, turned into ``OutputNotWritableError``) is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

__all__ = [
    "EXIT_CODES",
    "CheckpointError",
    "ConvertError",
    "CoverageError",
    "DtypeOverflowError",
    "EmptyFileError",
    "FrameworkError",
    "LayoutError",
    "MissingFileError",
    "MissingKeysError",
    "NonFiniteError",
    "NotACheckpointError",
    "OutputExistsError",
    "OutputNotWritableError",
    "ShapeMismatchError",
    "Interrupted",
    "UnexpectedKeysError",
    "UnsafePickleError",
    "UnsupportedTensorError",
    "UsageError",
    "WrongFormatError",
    "WrongModelError",
    "all_lines",
    "first_line",
    "one_line",
    "shorten",
]

#: exit code -> what it means (the CLI's --help and the README print this table)
EXIT_CODES = {
    0: "success",
    1: "verification (or parity) above tolerance",
    2: "usage error (a flag, a layout the family lacks)",
    3: "no such input file",
    4: "input file is empty",
    5: "input file is truncated or corrupt",
    6: "input is not a checkpoint (unrecognised content)",
    7: "file extension does not match the content, or is not a supported one",
    8: "unsafe pickle refused (nothing from it ran)",
    9: "checkpoint of another family or variant than --variant asks",
    10: "checkpoint of no known layout",
    11: "a tensor's shape does not fit the model",
    12: "tensors missing (allow with --allow-missing PATTERN)",
    13: "unexpected tensors (allow with --allow-unused PATTERN)",
    14: "NaN or Inf in the weights (allow with --allow-nonfinite)",
    15: "output exists (replace with --force)",
    16: "output cannot be written (its directory is not writable, or it is a directory, "
    "device or FIFO)",
    17: "--dtype overflows: finite values beyond the dtype's range (allow with --allow-nonfinite)",
    18: "a tensor of a dtype or kind the model cannot take (complex, float8, unsigned wider than "
    "8 bits, sparse, quantized, meta, object)",
    19: "a framework the conversion needs cannot be imported (not installed, or KERAS_BACKEND "
    "names no backend)",
    130: "interrupted (Ctrl-C): no partial output left (outputs it had already published are "
    "complete, and the line names them)",
    143: "terminated (SIGTERM): no partial output left (outputs it had already published are "
    "complete, and the line names them)",
}

#: the longest key name a message quotes whole; the longest line the CLI prints
KEY_CHARS, LINE_CHARS = 100, 1000


class ConvertError(Exception):
    """A failure caused by the input or the request, reported in one line."""

    exit_code = 1


class UsageError(ConvertError, ValueError):
    exit_code = 2


class CheckpointError(ConvertError, ValueError):
    """A checkpoint file cannot be read: truncated, corrupt or not holding tensors."""

    exit_code = 5


class MissingFileError(CheckpointError):
    exit_code = 3


class EmptyFileError(CheckpointError):
    exit_code = 4


class NotACheckpointError(CheckpointError):
    """The bytes are no format the converter reads (random bytes, a text file, an image)."""

    exit_code = 6


class WrongFormatError(CheckpointError):
    """The extension says one format, the content another (or the extension is unknown)."""

    exit_code = 7


class UnsafePickleError(CheckpointError):
    """The pickle refers to a global outside what tensors need (it could run code); nothing from
    the file was executed. The message names the refused global."""

    exit_code = 8


class UnsupportedTensorError(CheckpointError):
    """A tensor the model cannot take whatever its values: a dtype it does not compute in
    (complex, float8, uint16 and wider unsigned, object) or a kind other than a dense strided
    tensor (sparse, quantized, meta, a tensor subclass)."""

    exit_code = 18


class WrongModelError(ConvertError, ValueError):
    """The checkpoint is another family or variant than asked (``--variant``)."""

    exit_code = 9


class LayoutError(ConvertError, ValueError):
    """A state dict fits no known layout, or not the one asked for."""

    exit_code = 10


class ShapeMismatchError(LayoutError):
    """A tensor's shape does not fit the model (after the layout rule)."""

    exit_code = 11


def shorten(text: str, limit: int) -> str:
    """``text`` cut at ``limit`` characters, saying how many were left out."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text) - limit} more)"


def _listed(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(shorten(str(k), KEY_CHARS) for k in keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


class MissingKeysError(LayoutError, KeyError):
    """Tensors the model needs are not in the file (and maybe others it does not have)."""

    exit_code = 12

    def __init__(self, keys: Sequence[str], where: str = "", unexpected: Sequence[str] = ()):
        self.keys, self.unexpected = list(keys), list(unexpected)
        prefix = f"{where}: " if where else ""
        extra = (
            f"; {len(self.unexpected)} unexpected: {_listed(self.unexpected)}"
            if self.unexpected
            else ""
        )
        super().__init__(
            f"{prefix}{len(self.keys)} missing tensor(s): {_listed(self.keys)}{extra} "
            "(--allow-missing PATTERN leaves matching ones at their initial values)"
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class UnexpectedKeysError(LayoutError, KeyError):
    """The file holds tensors the model does not have."""

    exit_code = 13

    def __init__(self, keys: Sequence[str], where: str = "") -> None:
        self.keys, self.unexpected = list(keys), []
        prefix = f"{where}: " if where else ""
        super().__init__(
            f"{prefix}{len(self.keys)} unexpected tensor(s): {_listed(self.keys)} "
            "(--allow-unused PATTERN drops matching ones)"
        )

    def __str__(self) -> str:
        return self.args[0]


class CoverageError(ConvertError, KeyError):
    """Port variables and PyTorch tensors do not correspond one to one: some source tensors
    unused, some target variables unset (exit code: missing if any are unset, else
    unexpected)."""

    def __init__(self, unused: Sequence[str], unset: Sequence[str]) -> None:
        self.unused, self.unset = list(unused), list(unset)
        parts = []
        if self.unused:
            parts.append(f"{len(self.unused)} unused source key(s): {_listed(self.unused)}")
        if self.unset:
            parts.append(f"{len(self.unset)} unset target variable(s): {_listed(self.unset)}")
        super().__init__("; ".join(parts))

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return MissingKeysError.exit_code if self.unset else UnexpectedKeysError.exit_code

    def __str__(self) -> str:
        return self.args[0]


class NonFiniteError(ConvertError, ValueError):
    exit_code = 14


class DtypeOverflowError(NonFiniteError):
    """``--dtype`` casts finite values beyond the target dtype's range (float32 above 65504 to
    float16): they would be written as Inf."""

    exit_code = 17


class OutputExistsError(ConvertError, FileExistsError):
    exit_code = 15


class OutputNotWritableError(ConvertError, OSError):
    exit_code = 16


class FrameworkError(ConvertError, ImportError):
    """A deep-learning framework the run needs failed to import (not installed, a broken
    installation, ``KERAS_BACKEND`` naming no backend). An ``ImportError`` too, so that code
    trying an optional import still takes it for one."""

    exit_code = 19


class Interrupted(BaseException):
    """The run was stopped by a signal (SIGINT: 130, SIGTERM: 143); raised from the signal
    handler (``weight_convert.signals``) so that cleanup runs as for any failure. A
    ``BaseException``: no ``except Exception`` swallows it.

    ``written``: outputs already published when the signal came (during ``--verify`` or the
    summary); they are complete and kept, and the message names them; ``unfinished`` says what
    the signal cut short then (``--verify``)."""

    def __init__(self, signum: int, written: Sequence[object] = (), unfinished: str = "") -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        self.written = [str(p) for p in written]
        self.unfinished = unfinished
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        message = f"{'interrupted' if signum == signal.SIGINT else 'terminated'} ({name})"
        if self.written:
            message += f" after the outputs were written; kept, complete: {', '.join(self.written)}"
            message += f" ({unfinished} did not finish)" if unfinished else ""
        super().__init__(message)


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL.update({ord(c): " " for c in "\n\r\t\u2028\u2029"})


def one_line(message: object, limit: int = LINE_CHARS) -> str:
    """``message`` as one printable line: line breaks become spaces, other control characters
    (a key name may hold terminal escapes) ``\\xNN``, and at most ``limit`` characters are kept
    (see ``shorten``)."""
    return shorten(str(message).translate(_CONTROL), limit)


def all_lines(error: BaseException, limit: int = 600) -> str:
    """``error``'s whole message on one line (lines joined, blank ones dropped), at most
    ``limit`` characters: for messages whose cause is not on the first line (Keras' "A total
    of N objects could not be loaded. Example error message for object <...>:" then the
    cause)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return shorten(text or type(error).__name__, limit)


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its class name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
