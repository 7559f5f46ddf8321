"""One call on a thread of its own, its result (or its exception) collected later: work that overlaps other work."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

_T = TypeVar("_T")


class InBackground(Generic[_T]):
    """``call()`` started on a daemon thread at once; :meth:`result` waits for it and returns what it returned, or
    raises what it raised (a process that exits meanwhile does not wait for it)."""

    def __init__(self, call: Callable[[], _T], name: str = "background") -> None:
        self._call = call
        self._value: _T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:  # handed to whoever waits for the result
            self._error = exc

    def result(self) -> _T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
