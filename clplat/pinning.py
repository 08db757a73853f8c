"""Cores and a GPU per job when a launcher runs jobs side by side (``PinJobResources``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


_PINNED: dict[str, Any] = {}
"""This process's slot, cores and GPU, chosen once: a joblib worker runs several jobs and must
keep the cores it was given (and CUDA cannot change devices once initialised)."""


class PinJobResources(Callback):
    """Give every job running in parallel its own share of the cores and, if any, one GPU.

    Hydra's joblib and submitit-local launchers start jobs side by side without telling them
    apart: each would use every core (oversubscribing the machine) and the first GPU. Each
    job process claims a free *slot* (``0 .. slots-1``) with a lock file under
    ``<sweep_dir>/.slots`` that it holds until it exits, so two concurrently running jobs never
    share a slot; slot ``s`` gets cores ``[s*share, (s+1)*share)`` of the cores this process may
    use (``share = cpus_per_job`` or ``cores // slots``) and GPU ``s mod n_gpus`` of the visible
    ones, set through ``CUDA_VISIBLE_DEVICES`` before CUDA starts. Torch's intra-op threads
    follow the core count. Jobs beyond ``slots`` (no free lock) share by job number.
    """

    def __init__(self, slots: int | None = None, cpus_per_job: int | None = None, gpus: bool = True) -> None:
        self.slots = slots
        self.cpus_per_job = cpus_per_job if cpus_per_job and cpus_per_job > 0 else None
        self.gpus = gpus

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        import logging

        from hydra.types import RunMode

        if config.hydra.get("mode") != RunMode.MULTIRUN:  # `launcher=joblib` without -m: one run, nothing to share
            return
        if not _PINNED:
            available = _available_cores()
            slots = self.slots if self.slots and self.slots > 0 else max(1, len(available) // (self.cpus_per_job or 1))
            slot, lock = (0, None) if slots == 1 else claim_slot(Path(str(config.hydra.sweep.dir)) / ".slots", slots)
            if slot is None:
                slot = int(config.hydra.job.num) % slots
            _PINNED.update(slot=slot, lock=lock, cores=core_share(available, slot, slots, self.cpus_per_job),
                           gpu=gpu_for_slot(visible_gpus(), slot) if self.gpus else None)
        cores, gpu = _PINNED["cores"], _PINNED["gpu"]
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)
        import torch

        torch.set_num_threads(len(cores))
        if gpu is not None and not torch.cuda.is_initialized():
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        logging.getLogger(__name__).info("job %s: slot %d, cores %s, gpu %s", config.hydra.job.num,
                                         _PINNED["slot"], cores, gpu if gpu is not None else "-")


def _available_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def claim_slot(lock_dir: Path, slots: int) -> tuple[int | None, Any]:
    """The first slot whose lock file this process can lock (kept open, so held until exit)."""
    import fcntl

    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        handle = open(lock_dir / f"slot_{slot}.lock", "a")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return slot, handle
    return None, None


def core_share(available: Sequence[int], slot: int, slots: int, per_job: int | None = None) -> list[int]:
    """Slot ``slot``'s cores: consecutive blocks of ``per_job`` (default ``len // slots``, at least 1),
    wrapping around when there are more slots than blocks."""
    cores = list(available)
    share = per_job if per_job else max(1, len(cores) // max(slots, 1))
    if share >= len(cores):
        return cores
    start = (slot * share) % len(cores)
    return sorted({cores[(start + i) % len(cores)] for i in range(share)})


def visible_gpus() -> list[str]:
    """GPU ids this process may use, found without initialising CUDA (which would freeze them)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        import torch

        count = torch.cuda._device_count_nvml()  # NVML: leaves CUDA uninitialised
    except Exception:  # noqa: BLE001 - no NVML, no driver: nothing to pin
        return []
    return [str(i) for i in range(count)] if count > 0 else []


def gpu_for_slot(visible: Sequence[str], slot: int) -> str | None:
    return visible[slot % len(visible)] if visible else None
