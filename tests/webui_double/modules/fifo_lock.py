"""modules/fifo_lock.py: ``FIFOLock``, a non-re-entrant lock that wakes waiters in arrival order."""

import collections
import threading


class FIFOLock:
    def __init__(self):
        self._lock = threading.Lock()          # same attribute name as the WebUI's (tests peek at it)
        self._inner_lock = threading.Lock()
        self._pending_threads = collections.deque()

    def acquire(self, blocking=True):
        with self._inner_lock:
            if self._lock.acquire(False):
                return True
            if not blocking:
                return False
            ticket = threading.Event()
            self._pending_threads.append(ticket)
        ticket.wait()
        return self._lock.acquire()

    def release(self):
        with self._inner_lock:
            if self._pending_threads:
                self._pending_threads.popleft().set()
            self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()
