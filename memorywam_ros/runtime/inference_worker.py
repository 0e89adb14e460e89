"""A single background thread that runs inference jobs in order (no ROS).

Why a plain thread rather than an executor callback: the model call can take longer than a control
period; it must never sit on the executor that runs the 10 Hz command timer, and it must run jobs
strictly one at a time and in order (the policy's memory is sequential). Jobs carry a
`generation`; the owner bumps its generation on reset/stall and drops results of older ones.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InferenceWorker", "Job", "JobResult"]


@dataclass
class Job:
    generation: int
    payload: Any


@dataclass
class JobResult:
    generation: int
    value: Any = None
    error: BaseException | None = None
    info: dict[str, Any] = field(default_factory=dict)


class InferenceWorker:
    def __init__(
        self, run: Callable[[Any], Any], on_result: Callable[[JobResult], None], name: str = "inference"
    ) -> None:
        self._run = run
        self._on_result = on_result
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._busy.is_set() or not self._queue.empty()

    @property
    def alive(self) -> bool:
        """The thread has not finished (a model call may still be running after `stop`)."""
        return self._thread.is_alive()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._busy.set()
            try:
                try:
                    result = JobResult(job.generation, value=self._run(job.payload))
                except Exception as e:  # reported to the owner, who holds and diagnoses
                    result = JobResult(job.generation, error=e)
                self._on_result(result)
            finally:
                self._busy.clear()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
