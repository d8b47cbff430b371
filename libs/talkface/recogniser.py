"""Phone recognition in a child process, so that it runs beside the render loop.

PocketSphinx holds the GIL for the whole of a decode: in the engine's own process it
would stall the render loop until the clip is recognised. In a child process the pieces
of a clip (audio.mouth_track_stream cuts them) are recognised on another core while the
frames of the first pieces render. The child (`python -m libs.talkface.recogniser`, fed
pieces on stdin, answering one JSON line each) is started by the engine's first job and
reused for every job; when it is busy, dies or cannot start, the pieces are recognised in
the calling thread instead, with the same result, and a new child is started for the next
job.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from . import phones

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<I")  # samples in the piece that follows (float32, 16 kHz)
_WAIT_FOR_CHILD_S = 2.0  # a job waits this long for the child before recognising in process
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PhoneRecogniser:
    """A phones.Recogniser backed by one child process, used by one job at a time."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._busy = threading.Lock()

    def start(self) -> None:
        """Start the child unless it runs already; it loads its model in the background."""
        if self._proc is not None and self._proc.poll() is None:
            return
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen([sys.executable, "-m", "libs.talkface.recogniser"], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=_ROOT)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def __call__(self, pieces: list[np.ndarray]) -> Iterator[phones.Phones]:
        # the child may still be finishing the clip of a job that stopped early
        if not self._busy.acquire(timeout=_WAIT_FOR_CHILD_S):
            yield from phones.recognise_in_turn(pieces)  # another job has the child
            return
        done = 0
        try:
            try:
                self.start()
            except OSError as exc:
                log.warning("cannot start the phone recogniser (%s); recognising in process", exc)
                yield from phones.recognise_in_turn(pieces)
                return
            proc = self._proc
            feeder = threading.Thread(target=_feed, args=(proc.stdin, pieces), daemon=True)  # type: ignore[union-attr]
            feeder.start()
            for _piece in pieces:
                line = proc.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    break
                done += 1
                yield [tuple(p) for p in json.loads(line)]
            if done < len(pieces):
                log.warning("the phone recogniser stopped (exit %s); recognising in process",
                            proc.poll())  # type: ignore[union-attr]
                self._stop()
                yield from phones.recognise_in_turn(pieces[done:])
                done = len(pieces)
        finally:
            if done < len(pieces) and self._proc is not None:
                # Left mid-clip (a job cut short or cancelled): the child's other answers
                # are still coming. Read them away in the background and free the child then.
                threading.Thread(target=self._drain, args=(self._proc, len(pieces) - done),
                                 name="recogniser-drain", daemon=True).start()
            else:
                self._busy.release()

    def _drain(self, proc: subprocess.Popen, count: int) -> None:
        try:
            for _ in range(count):
                if not proc.stdout.readline():  # type: ignore[union-attr]
                    break
        finally:
            self._busy.release()

    def close(self) -> None:
        """Stop the child."""
        self._stop()


def _feed(out: BinaryIO, pieces: list[np.ndarray]) -> None:
    try:
        for piece in pieces:
            data = np.ascontiguousarray(piece, np.float32).tobytes()
            out.write(_HEADER.pack(len(data) // 4) + data)
        out.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the child died or was stopped; the reader sees it


def _serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The child: recognise pieces from `inp` until it closes, one JSON line each."""
    phones.recognise_phones(np.zeros(1600, np.float32))  # load the model now
    while True:
        head = inp.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return
        (count,) = _HEADER.unpack(head)
        samples = np.frombuffer(inp.read(count * 4), np.float32)
        out.write(json.dumps(phones.recognise_phones(samples)).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
