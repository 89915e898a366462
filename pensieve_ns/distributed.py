"""Multi-process training on CPUs (gloo) through nerfstudio's own launcher.

nerfstudio 1.1.5's ``_distributed_worker`` asserts CUDA before it starts a process group, although it would pick
gloo for CPUs. ``enable_cpu_workers()`` (called when ``ns-train`` builds a ``PensieveTrainerConfig`` from its CLI)
swaps in a worker that does the same set-up without the CUDA assertions when ``--machine.device-type cpu``, and
hands CUDA runs to the original unchanged. So ``--machine.num-devices N`` (and ``--machine.num-machines``) is one
code path on CPUs and GPUs.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any, Callable


def cpu_capable_worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_devices_per_machine: int,
    machine_rank: int,
    dist_url: str,
    config: Any,
    timeout: timedelta = timedelta(minutes=30),
    device_type: str = "cuda",
) -> Any:
    import torch.distributed as dist
    from nerfstudio.utils import comms

    if device_type != "cpu":
        return _ORIGINAL_WORKER(
            local_rank, main_func, world_size, num_devices_per_machine, machine_rank, dist_url, config, timeout, device_type
        )
    global_rank = machine_rank * num_devices_per_machine + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout)
    for i in range(world_size // num_devices_per_machine):
        group = dist.new_group(list(range(i * num_devices_per_machine, (i + 1) * num_devices_per_machine)))
        if i == machine_rank:
            comms.LOCAL_PROCESS_GROUP = group
    output = main_func(local_rank, world_size, config, global_rank)
    comms.synchronize()
    dist.destroy_process_group()
    return output


_ORIGINAL_WORKER: Callable = None  # type: ignore[assignment]


def enable_cpu_workers() -> None:
    """Route nerfstudio's multi-process launch through ``cpu_capable_worker`` (idempotent)."""
    global _ORIGINAL_WORKER
    # Only where nerfstudio's train script is in use (ns-train); importing it from elsewhere would be circular.
    ns_train = sys.modules.get("nerfstudio.scripts.train")
    worker = getattr(ns_train, "_distributed_worker", None)  # None while the script is still importing
    if worker is not None and worker is not cpu_capable_worker:
        _ORIGINAL_WORKER = ns_train._distributed_worker
        ns_train._distributed_worker = cpu_capable_worker
