"""A process that compiles generated kernels into the cache for `engine.compile_concurrently`.

Started as `python -m tosaic.kernels.compile_worker DIRECTORY`, it reads jobs from stdin (module key,
source, function name, argument type tuples) and answers each on stdout with (key, None) once the
function is compiled for every signature, or (key, the traceback) if compiling failed. Each message is a
pickle preceded by its length. A module run as a command, not a `multiprocessing` child: a spawned child
re-imports the parent's `__main__`, which runs a user's script again where it has no
`if __name__ == "__main__"` guard, and the pool then breaks.
"""

import os
import pickle
import struct
import sys
import traceback
from pathlib import Path

_LENGTH = struct.Struct("<Q")


def send(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def receive(stream):
    """The next message on `stream`, or None at its end."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(header)
    return pickle.loads(stream.read(length))


def main(directory: str) -> None:
    from tosaic.kernels.engine import compile_job

    # Replies get their own copy of stdout; anything the compilation prints goes to stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    while (job := receive(sys.stdin.buffer)) is not None:
        key = job[0]
        try:
            compile_job(*job, Path(directory))
            send(replies, (key, None))
        except Exception:
            send(replies, (key, traceback.format_exc()))


if __name__ == "__main__":
    main(sys.argv[1])
