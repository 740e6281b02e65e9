"""Command-line entry points: a user error is one ``error: ...`` line and exit code 2, not a traceback.

Every script ends with ``sys.exit(run(main))``. Errors a user can fix (a config typo, a missing
folder, a file that does not fit) are ``ValueError``s or missing/unwritable paths; they print their
message, which names the key or file and the fix. Anything else is a bug and keeps its traceback.
``--debug`` shows the traceback of user errors too, and a run's log file always gets it. Every
script builds its flags with ``ArgumentParser`` below, so a wrong flag is one line too.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from .config import Config, replace_checked
from .protocol import Protocol
from .schema import hints

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)  # "no space left on <path>" (utils/checkpoint.save_atomic)
DEBUG_HELP = "on an error, show the full traceback (user errors are otherwise one line)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with this repository's error format: one ``error:`` line, exit code 2.

    argparse's own prints the whole usage block above the message, which buries it; the script's
    docstring is its ``--help`` text, kept as written (examples and all).
    """

    def __init__(self, description: str | None = None, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(description=description, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """``main(argv)``; a user error prints ``error: <message>`` on stderr and returns 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(argv) or 0
    except (*USER_ERRORS, OSError) as err:
        user_error = isinstance(err, USER_ERRORS) or err.errno in FULL_DISK
        if "--debug" in argv or not user_error:
            raise
        _log_traceback(err)
        message = (err.strerror if isinstance(err, OSError) and err.strerror else str(err)) or type(err).__name__
        message = worker_error_message(message, type(err))
        if isinstance(err, OSError) and err.filename and str(err.filename) not in message:
            message = f"{message}: {err.filename}"
        if not getattr(err, "raised_by_every_process", False) or os.environ.get("RANK", "0") == "0":
            print(f"error: {message}", file=sys.stderr)
        return 2


def raised_by_every_process(err: BaseException) -> BaseException:
    """Mark an error every process of a distributed run raises alike (agreed over the process group): it is
    printed once, by rank 0, not once per process, interleaved."""
    err.raised_by_every_process = True
    return err


def worker_error_message(message: str, kind: type[BaseException]) -> str:
    """The original message of an error a DataLoader worker raised, else ``message`` unchanged.

    PyTorch re-raises a worker's exception in the main process as the same type, with the message
    ``Caught <Type> in DataLoader worker process N.\nOriginal Traceback (most recent call last):``
    and the worker's whole traceback, which ends with ``<module>.<Type>: <original message>``.
    """
    if not message.startswith(f"Caught {kind.__name__} ") or "\nOriginal Traceback" not in message:
        return message
    module = "" if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}."
    name = module + kind.__qualname__  # as the traceback module prints it
    _, found, original = message.rstrip().rpartition(f"\n{name}: ")
    return original if found else message.rstrip().splitlines()[-1]


def _log_traceback(err: BaseException) -> None:
    """The traceback goes to the log files of the run (train.log), never to the console."""
    logger = logging.getLogger("spnet")
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "error", None, None)
            record.exc_info = (type(err), err, err.__traceback__)
            handler.handle(record)


def check_writable(folder: Path, flag: str) -> None:
    """Create ``folder`` and prove it is writable now, before work that may take hours."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{flag} {folder} is a file, not a folder; choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise PermissionError(
            f"{flag}: cannot write into {folder} ({err.strerror or err}); choose another folder"
        ) from err


def add_protocol_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of the test protocol (``utils/protocol.py``: its flag, help and bounds are
    declared with the field), plus ``--fuse`` and ``--print-protocol``; for eval.py and predict.py.

    Unset flags keep the config's ``eval`` section; ``apply_protocol_flags`` checks the set ones as
    the config's keys are checked, naming the flag.
    """
    group = parser.add_argument_group("test protocol (default: the config's eval section; docs/evaluation.md)")
    for f in dataclasses.fields(Protocol):
        note = f"; {f.metadata['note']}" if f.metadata["note"] else ""
        help = f"{f.metadata['help']} (eval.{f.name}{note})"
        group.add_argument(f.metadata["flag"], dest=f.name, help=help, **_argparse_options(f))
    group.add_argument(
        "--fuse",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fold every conv+BatchNorm pair and ACNet block into one conv before inference (eval.fast.fold_bn, "
        "default on; exact up to float rounding, checked on a sample when folding; --no-fuse runs the modules "
        "as trained)",
    )
    group.add_argument(
        "--print-protocol", action="store_true", help="print the resulting protocol in one line and exit"
    )


def _argparse_options(f: dataclasses.Field) -> dict[str, object]:
    """argparse options of a protocol field, from its annotation (a string under postponed annotations)."""
    from .protocol import Protocol

    tp = hints(Protocol)[f.name]
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Literal:
        return {"choices": args}
    if tp == bool | None:
        return {"action": argparse.BooleanOptionalAction, "default": None}
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType)
    inner = next(a for a in args if a is not type(None)) if optional else tp  # X | None -> X
    item_args = typing.get_args(inner)
    if typing.get_origin(inner) is tuple:
        variadic = len(item_args) == 2 and item_args[1] is Ellipsis
        nargs = "+" if variadic else len(item_args)
        return {"nargs": nargs, "type": item_args[0], "metavar": f.metadata.get("metavar")}
    return {"type": inner}


def apply_protocol_flags(cfg: Config, args: argparse.Namespace) -> Config:
    """``cfg`` with the protocol flags that were given written into its ``eval`` section, each checked
    as the config key it sets and named by its flag in an error."""
    values, sources = {}, {}
    for f in dataclasses.fields(Protocol):
        if getattr(args, f.name) is not None:
            values[f.name], sources[f.name] = getattr(args, f.name), f.metadata["flag"]
    if args.fuse is not None:
        values["fast"], sources["fast"] = {"fold_bn": args.fuse}, "--fuse"
    return replace_checked(cfg, "eval", values, sources)
