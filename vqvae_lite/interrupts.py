# Generated from notebooks/06_training.ipynb by tools/export.py: edit the notebook.
"""Interrupts: the first Ctrl-C or SIGTERM lets the loop finish its step and save; a second
stops at once. `TrainingInterrupted` says what was saved.

Chapter 6 (`notebooks/06_training.ipynb`) explains it; the appendix "Training for real" sends
a real SIGTERM to a training process.
"""

import signal
import threading
from contextlib import contextmanager

STOP_SIGNALS = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM; the message says what was saved."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum  # the command line exits with 128 + signum: 130 or 143


@contextmanager
def deferred_interrupt():
    """The first Ctrl-C, notebook interrupt or SIGTERM (a cluster's scheduler, `docker stop`,
    `kill`): the loop finishes its step, saves and stops. A second signal stops at once.

    Yields the list of the signals received so far.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        received.append(signum)
        if len(received) > 1:
            name = STOP_SIGNALS[signum]
            raise TrainingInterrupted(f"a second signal, {name}, stopped training at once", signum)

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
