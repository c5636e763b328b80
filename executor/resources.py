"""Logical resources of a backend and who holds them: CPUs, GPU devices (fractions
allowed), custom resources. Tasks hold them while they run, actors while they live."""

from __future__ import annotations

import functools
import glob
import math
import os
from dataclasses import dataclass, field

from streambatch.executor.contract import Resources


def detected_gpus() -> int:
    """CUDA devices visible to this process, found without importing torch.

    >>> detected_gpus() >= 0
    True
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return _device_files()


@functools.lru_cache(maxsize=1)
def _device_files() -> int:
    """NVIDIA device files (looked up once: ~0.4 ms a glob, paid by every plan)."""
    return len(glob.glob("/dev/nvidia[0-9]*"))


@dataclass
class Allocation:
    """What one task or actor holds: CPUs, (device, fraction) pairs, custom amounts."""

    cpus: float
    gpus: tuple[tuple[int, float], ...] = ()
    custom: tuple[tuple[str, float], ...] = ()
    borrowed: bool = False
    node: int = 0  # the node it is on (an index into the backend's nodes)

    def cuda_visible_devices(self) -> str:
        """The value of CUDA_VISIBLE_DEVICES for the holder ("" when it has no GPU).

        >>> Allocation(1, ((2, 0.5),)).cuda_visible_devices()
        '2'
        """
        return ",".join(str(device) for device, _ in self.gpus)


@dataclass
class ResourceLedger:
    """Free and total logical resources; hands out allocations.

    >>> ledger = ResourceLedger(num_cpus=2, num_gpus=1)
    >>> a = ledger.acquire(Resources(num_cpus=1, num_gpus=0.5))
    >>> b = ledger.acquire(Resources(num_cpus=1, num_gpus=0.5))
    >>> a.gpus, b.gpus, ledger.acquire(Resources(num_cpus=1))
    (((0, 0.5),), ((0, 0.5),), None)
    >>> ledger.release(a); ledger.free_cpus
    1.0
    """

    num_cpus: float
    num_gpus: float = 0.0
    custom: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.free_cpus = float(self.num_cpus)
        whole, part = int(self.num_gpus), self.num_gpus - int(self.num_gpus)
        self.gpu_free = [1.0] * whole + ([part] if part > 1e-9 else [])
        self.gpu_total = list(self.gpu_free)
        self.custom_free = {k: float(v) for k, v in self.custom.items()}

    def resize(self, num_cpus: float, num_gpus: float, custom: dict) -> bool:
        """Follow a cluster whose resources changed (nodes joined or left); True if changed.

        Held allocations stay valid; free amounts move by the difference (and may go
        negative until holders release, so nothing new starts meanwhile).

        >>> ledger = ResourceLedger(num_cpus=2)
        >>> ledger.resize(4, 1, {}), ledger.free_cpus, ledger.gpu_free
        (True, 4.0, [1.0])
        """
        if (num_cpus, num_gpus, custom) == (self.num_cpus, self.num_gpus, self.custom):
            return False
        self.free_cpus += num_cpus - self.num_cpus
        whole = int(num_gpus)
        target = [1.0] * whole + ([num_gpus - whole] if num_gpus - whole > 1e-9 else [])
        while len(self.gpu_total) < len(target):
            self.gpu_total.append(0.0)
            self.gpu_free.append(0.0)
        for device, total in enumerate(target + [0.0] * (len(self.gpu_total) - len(target))):
            self.gpu_free[device] += total - self.gpu_total[device]
            self.gpu_total[device] = total
        for name in set(custom) | set(self.custom):
            self.custom_free[name] = self.custom_free.get(name, 0.0) + \
                custom.get(name, 0.0) - self.custom.get(name, 0.0)
        self.num_cpus, self.num_gpus, self.custom = num_cpus, num_gpus, dict(custom)
        return True

    def fits_ever(self, req: Resources) -> str | None:
        """None when ``req`` fits an empty ledger, else what is missing.

        >>> ResourceLedger(num_cpus=2).fits_ever(Resources(num_gpus=1))
        'asks for 1 GPU but the backend has 0 GPUs'
        """
        if req.num_cpus > self.num_cpus + 1e-9:
            return f"asks for {req.num_cpus:g} CPUs but the backend has {self.num_cpus:g}"
        if self._gpu_pick(req.num_gpus, self.gpu_total) is None:
            return f"asks for {req.num_gpus:g} GPU but the backend has {self.num_gpus:g} GPUs"
        for name, amount in req.custom:
            if amount > self.custom.get(name, 0) + 1e-9:
                return (f"asks for {amount:g} of resource {name!r} but the backend has "
                        f"{self.custom.get(name, 0):g}")
        return None

    def acquire(self, req: Resources) -> Allocation | None:
        """Take ``req`` if it fits now, else None."""
        if req.num_cpus > self.free_cpus + 1e-9:
            return None
        if any(amount > self.custom_free.get(n, 0) + 1e-9 for n, amount in req.custom):
            return None
        gpus = self._gpu_pick(req.num_gpus, self.gpu_free)
        if gpus is None:
            return None
        self.free_cpus -= req.num_cpus
        for device, amount in gpus:
            self.gpu_free[device] -= amount
        for name, amount in req.custom:
            self.custom_free[name] -= amount
        return Allocation(req.num_cpus, gpus, req.custom)

    def release(self, alloc: Allocation) -> None:
        """Give an allocation back."""
        self.free_cpus += alloc.cpus
        for device, amount in alloc.gpus:
            self.gpu_free[device] += amount
        for name, amount in alloc.custom:
            self.custom_free[name] += amount

    @staticmethod
    def _gpu_pick(amount: float, free: list[float]):
        if amount <= 0:
            return ()
        if amount <= 1.0:
            fitting = [(f, d) for d, f in enumerate(free) if f + 1e-9 >= amount]
            return ((min(fitting)[1], amount),) if fitting else None
        whole = [d for d, f in enumerate(free) if f >= 1.0 - 1e-9]
        need = math.ceil(amount)
        return tuple((d, 1.0) for d in whole[:need]) if len(whole) >= need else None
