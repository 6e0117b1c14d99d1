"""The CEL package, and the child process that evaluates costly conditions.

The package's evaluation holds the GIL until it ends and cannot be
interrupted, so a condition that runs long in the server's process stalls
its event loop and every thread. Conditions the estimate calls costly
(stepstream.engine.sandbox) run here instead, in a child the server kills
when its deadline passes. This module imports nothing of Django or the
rest of Stepstream, so a child starts in a few tens of milliseconds.

Wire format, both ways: a 4-byte big-endian length, then a pickle (a child
first sends a length of 0 alone, once it is ready). The server sends
`(text, variables)` and reads back True, False or None (an evaluation
error). Only the server writes to a child's stdin.
"""

import importlib.machinery
import importlib.util
import os
import pickle
import struct
import sys
from types import ModuleType
from typing import Any

HEADER = struct.Struct(">I")
MAX_PROGRAMS = 256  # compiled programs a child keeps


def load_cel() -> ModuleType:
    """The package's compiled module alone, without the package's `__init__`.

    That `__init__` also imports the package's command line (typer,
    prompt_toolkit, rich): about 170 ms of every Stepstream process's start,
    for nothing the engine uses. The module is registered under its own name,
    so a later `import cel` finds it rather than loading it twice (which the
    extension refuses)."""
    name = "cel.cel"
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec("cel")
    folders = (package and package.submodule_search_locations) or ()
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for folder in folders:
            path = os.path.join(folder, "cel" + suffix)
            if os.path.exists(path):
                loader = importlib.machinery.ExtensionFileLoader(name, path)
                spec = importlib.util.spec_from_loader(name, loader)
                assert spec is not None  # always, for a loader given
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                loader.exec_module(module)
                return module
    import cel  # another layout (or none installed: its ImportError)

    return cel


def _read_exactly(stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def main() -> None:
    cel = load_cel()
    programs: dict[str, Any] = {}  # the package's compiled programs
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(HEADER.pack(0))  # ready: the server's deadlines start from here
    stdout.flush()
    while True:
        try:
            (length,) = HEADER.unpack(_read_exactly(stdin, HEADER.size))
            text, variables = pickle.loads(_read_exactly(stdin, length))
        except EOFError:
            return
        program = programs.get(text)
        if program is None:
            if len(programs) >= MAX_PROGRAMS:
                programs.clear()
            program = programs[text] = cel.compile(text)
        try:
            result = program.execute(cel.Context(variables)) is True
        except Exception:
            result = None
        answer = pickle.dumps(result)
        stdout.write(HEADER.pack(len(answer)) + answer)
        stdout.flush()


if __name__ == "__main__":
    main()
