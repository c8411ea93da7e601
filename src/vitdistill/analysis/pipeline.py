"""Statistics of batch k on a worker thread while batch k+1 goes through the model.

:class:`StatsWorker` runs one function per submitted batch, in order, on a single thread, with
a bounded queue: ``submit`` blocks while ``depth`` batches already wait, so at most
``depth + 1`` batches of features exist beside the one in the model and memory stays flat in
the number of images. ``drain`` waits until every submitted batch is done (before a checkpoint,
and at the end); an exception in the worker is raised again in the caller by the next
``submit``/``drain``. Torch releases the GIL in its kernels, so the forward pass and the
statistics overlap wherever one leaves a core idle.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import torch


class StatsWorker:
    def __init__(self, fn: Callable, depth: int = 1, threads: int | None = None):
        self.fn = fn
        self.threads = threads
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vitdistill-stats", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)  # this thread's own count
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    with torch.inference_mode():
                        self.fn(*item)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self._error = e
            finally:
                self._q.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, *args) -> None:
        self._raise()
        self._q.put(args)

    def drain(self) -> None:
        self._q.join()
        self._raise()

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
