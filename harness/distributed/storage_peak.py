"""Peak bytes of live tensor storages, counted op by op: a deterministic memory measure for CPU runs.

On a GPU the caching allocator's peak (``torch.cuda.max_memory_allocated``) is what the planner predicts. A CPU has no
such counter: the resident set (VmHWM) moves with glibc's heap, thread pools and page reuse, so a 20 % comparison on a
model of a few million parameters would measure the allocator, not the code. :class:`StoragePeak` is a
``TorchDispatchMode`` that registers every storage an op returns (weak references, so a storage leaves the count when
it is freed) and keeps the maximum of the live total after every op: the same number at any thread count, and the
quantity the planner's formulas describe (tensor bytes, without allocator rounding). PyTorch's own
``torch.distributed._tools.mem_tracker.MemTracker`` does the same per module but refuses a module called more than
once per iteration, which the per-language loop does K times.

Storages that exist before the mode is entered are counted only when registered (:meth:`StoragePeak.register`: the
model's parameters, gradients and buffers, an optimizer's state, any tensor). ``UntypedStorage.resize_`` (FSDP) is not
seen: not used on the paths measured here.

A dispatch mode is thread-local, and asynchronous DDP hooks (as PyTorch's PowerSGD hook) finish their work in future
callbacks that gloo runs on its own worker thread. With ``follow_callbacks=True`` the mode wraps every callback given to
``torch.futures.Future.then`` / ``add_done_callback`` while it is active, so what a callback allocates on another
thread is counted too (the counters are locked). The peak then includes whatever the two threads hold at once, which
depends on how they interleave: the same code can peak a little differently from run to run.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode_stack
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary


class StoragePeak(TorchDispatchMode):
    """``with StoragePeak() as m: ...`` then ``m.peak`` (bytes), ``m.live`` (bytes now), ``m.reset_peak()``."""

    def __init__(self, follow_callbacks: bool = False) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.follow_callbacks = follow_callbacks
        self._refs: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._lock = threading.RLock()
        self._patched: dict[str, Any] = {}

    def _free(self, nbytes: int, _ref: Any) -> None:
        with self._lock:
            self.live -= nbytes

    def _add(self, t: torch.Tensor) -> None:
        if t.is_meta or not hasattr(t, "untyped_storage"):
            return
        st = t.untyped_storage()
        with self._lock:
            if st in self._refs:
                return
            nbytes = st.nbytes()
            self._refs[st] = weakref.ref(st, lambda ref, n=nbytes: self._free(n, ref))
            self.live += nbytes
            self.peak = max(self.peak, self.live)

    def register(self, *objects: Any) -> StoragePeak:
        """Count storages created before the mode: modules (parameters, gradients, buffers), optimizers (state),
        tensors, or containers of them."""
        for obj in objects:
            if isinstance(obj, torch.nn.Module):
                self.register(*obj.parameters(), *obj.buffers(), *(p.grad for p in obj.parameters()))
            elif isinstance(obj, torch.optim.Optimizer):
                self.register(*obj.state.values())
            else:
                for leaf in tree_flatten(obj)[0]:
                    if isinstance(leaf, torch.Tensor):
                        self._add(leaf)
        return self

    def reset_peak(self) -> None:
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - the dispatch protocol
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self._add(leaf)
        return out

    # -- future callbacks on other threads -------------------------------------------------------------------------
    def _followed(self, callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(fut: Any) -> Any:
            if any(isinstance(m, (StoragePeak, _Follower)) for m in _get_current_dispatch_mode_stack()):
                return callback(fut)  # inline, on a thread where the mode is already active
            with _Follower(self):
                return callback(fut)

        return run

    def __enter__(self) -> StoragePeak:
        if self.follow_callbacks:
            for name in ("then", "add_done_callback"):
                original = self._patched[name] = getattr(torch._C.Future, name)
                setattr(torch._C.Future, name, lambda fut, cb, _o=original: _o(fut, self._followed(cb)))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        for name, original in self._patched.items():
            setattr(torch._C.Future, name, original)
        self._patched = {}
        return super().__exit__(*exc)


class _Follower(TorchDispatchMode):
    """The parent's counting on another thread (a callback's), for :class:`StoragePeak` ``follow_callbacks``."""

    def __init__(self, parent: StoragePeak) -> None:
        super().__init__()
        self.parent = parent

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - the dispatch protocol
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self.parent._add(leaf)
        return out
