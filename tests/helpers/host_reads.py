"""Count the host synchronisations of code that runs on the CPU as if it ran on an accelerator.

On a GPU a read of a device tensor's value (``.item()``, ``.tolist()``, ``bool()``, ``float()``,
``int()``, ``.numpy()``) or a copy to the host (``.cpu()``, ``.to("cpu")``) makes the host wait for
the device. On the CPU nothing waits, so this counter tracks which tensors are *host* tensors (made
from NumPy or Python values without a device) and counts every read of the values of any other
tensor while it is active: a device-to-host copy (``.cpu()``, ``.to("cpu")``) counts once, when
its values are read. Reads inside torch's C++ code are not seen;
``torch.cuda.set_sync_debug_mode`` sees those where CUDA is present.
"""

from __future__ import annotations

import contextlib
import traceback
import weakref
from dataclasses import dataclass, field

import torch

_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")


@dataclass
class Reads:
    events: list[tuple[str, str]] = field(default_factory=list)  # (what, where: file:line in mtl_cli)

    def __len__(self) -> int:
        return len(self.events)

    def clear(self) -> None:
        self.events.clear()


def _where() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/mtl_cli/" in frame.filename:
            return f"{frame.filename.split('/mtl_cli/')[-1]}:{frame.lineno}"
    return "outside mtl_cli"


def _is_cpu(device) -> bool:
    return device is not None and torch.device(device).type == "cpu"


class _IdSet:
    """Tensors by identity (a WeakSet would compare tensors with ``==``, elementwise)."""

    def __init__(self, items=()):
        self._refs: dict[int, weakref.ref] = {}
        for t in items:
            self.add(t)

    def add(self, t) -> None:
        self._refs[id(t)] = weakref.ref(t)

    def __contains__(self, t) -> bool:
        r = self._refs.get(id(t))
        return r is not None and r() is t


@contextlib.contextmanager
def count_host_reads(host_tensors=()):
    """Count, in the yielded :class:`Reads`, the host reads and host copies of device tensors
    (every tensor but those in ``host_tensors``, those made on the host, and copies of them)."""
    host = _IdSet(host_tensors)
    reads = Reads()
    T = torch.Tensor
    saved = {name: getattr(T, name) for name in (*_READS, "to", "cpu")}
    saved_fn = {name: getattr(torch, name) for name in ("from_numpy", "tensor", "as_tensor")}
    active = [True]

    def reader(name):
        orig = saved[name]

        def read(self, *args, **kwargs):
            if active[0] and self not in host:
                active[0] = False
                try:
                    reads.events.append((name, _where()))
                finally:
                    active[0] = True
            return orig(self, *args, **kwargs)

        return read

    def to(self, *args, **kwargs):
        out = saved["to"](self, *args, **kwargs)
        if not active[0] or self not in host:
            return out  # a copy of a device tensor: counted when its values are read
        device = kwargs.get("device")
        for a in args:
            if isinstance(a, (str, torch.device)):
                device = a
            elif isinstance(a, torch.Tensor):
                device = a.device
        if device is None:
            host.add(out)  # a cast on the host stays there
        elif out is self:
            out = out.clone()  # a host-to-device copy (not a synchronisation): a new device tensor
        return out

    def cpu(self, *args, **kwargs):
        out = saved["cpu"](self, *args, **kwargs)
        if self in host:
            host.add(out)
        elif out is self:
            out = out.clone()  # (on an accelerator: a new host tensor, read when its values are)
        return out

    def maker(name):
        orig = saved_fn[name]

        def make(*args, **kwargs):
            out = orig(*args, **kwargs)
            if name == "from_numpy" or kwargs.get("device") is None:
                host.add(out)
            return out

        return make

    try:
        for name in _READS:
            setattr(T, name, reader(name))
        T.to, T.cpu = to, cpu
        for name in saved_fn:
            setattr(torch, name, maker(name))
        yield reads
    finally:
        for name, fn in saved.items():
            setattr(T, name, fn)
        for name, fn in saved_fn.items():
            setattr(torch, name, fn)
