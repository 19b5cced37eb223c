"""One shape for progress and cancel, from the readers through the engine to the UI's tasks.

``progress(done, total, what)``: ``done`` of ``total`` steps, ``what`` says in
words what is being done ("decoding slices", "stone probability: 8 of 148
slices"); ``total`` 0 means not known yet.  ``cancelled()`` is asked between
steps; true means stop (by raising ``medview.errors.Cancelled``).
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int, int, str], None]
CancelCheck = Callable[[], bool]
