"""Process-level pieces of a node's `main` (no rclpy import): signal flag, one-line start-up
errors, the shutdown watchdog.

Why they exist (issue 13): start-up failures printed 20-56-line tracebacks that often named neither
file nor part; a SIGINT raised KeyboardInterrupt at an arbitrary point of rclpy's executor, a second
Ctrl-C raised again inside the shutdown (a traceback), and the shutdown waited up to 30 s for a
running model call.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["SignalFlag", "force_exit_after", "startup_error_line"]


class SignalFlag:
    """SIGINT/SIGTERM handling of `main`: rclpy's own handler would shut the context down before the
    hold command is published, so it is off (SignalHandlerOptions.NO) and this one is installed.

    Why a flag and not KeyboardInterrupt once spinning: an exception raised at an arbitrary point of
    rclpy's executor code leaves its wait set and entity handles mid-use, and a second Ctrl-C would
    raise again inside the shutdown (a traceback, and the hold possibly never sent). While the node
    is still being built (model loading) there is nothing to hold, so a signal then interrupts.
    """

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.stop_requested = False
        self.spinning = False  # set once the node is built: from then on a signal only sets the flag
        # called on the first signal while spinning (no locks, no ROS calls: it runs in the handler);
        # the node uses it to stop waiting in a callback (a ~/reset waiting for a model call)
        self.on_stop: Callable[[], None] | None = None

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        first = not self.stop_requested
        self.stop_requested = True
        if first and not self.spinning:
            raise KeyboardInterrupt(f"signal {signum}")
        if first and self.on_stop is not None:
            self.on_stop()
        if not first:
            print(f"[memorywam_policy] signal {signum}: already shutting down (at most "
                  f"{self.budget_s:.0f} s)", file=sys.stderr, flush=True)


def startup_error_line(err: BaseException) -> str:
    """One line for a start-up failure: the exception's message already names the part, file or
    parameter (CheckpointError, the parameter checks, rclpy's parameter exceptions)."""
    text = " ".join(str(err).split()) or repr(err)
    return f"start-up failed: {type(err).__name__}: {text}"


def force_exit_after(seconds: float, logger: Any) -> threading.Timer:
    """A daemon timer that ends the process (exit 1) if the shutdown is still running after `seconds`;
    `cancel()` it when the shutdown is done."""

    def force() -> None:
        logger.error(f"shutdown did not finish within {seconds:.0f} s; exiting now")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()
    return timer
