"""Where this process sits in a distributed job: torch.distributed, then torchrun's variables."""
import os
import sys


def default_rank_world(rank=None, world_size=None):
    """(rank, world_size): explicit values win; then an initialised torch.distributed process
    group; then the RANK/WORLD_SIZE environment variables that torchrun sets; else (0, 1)."""
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    r, w = 0, 1
    # A process group can only be initialised once torch.distributed is imported, so look it up
    # instead of importing it: importing torch costs a numpy-only user 1-2 s per Loader.
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        r, w = dist.get_rank(), dist.get_world_size()
    elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        r, w = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return (r if rank is None else int(rank)), (w if world_size is None else int(world_size))


def gather_state(loader):
    """Every rank's loader.state_dict(), as a list indexed by rank (torch.distributed
    all_gather_object; a collective: call it on every rank). Without an initialised process group:
    [loader.state_dict()]. Pass the list to load_elastic() on a run of any world size."""
    state = loader.state_dict()
    try:
        import torch.distributed as dist
    except ImportError:
        return [state]
    if not (dist.is_available() and dist.is_initialized()):
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def load_elastic(loader, states):
    """Resumes `loader` (this run's rank and world size) from every rank's state of an earlier run
    of any world size: the samples that run had not consumed in its epoch come exactly once across
    this run's ranks, then normal epochs (docs/distributed.md). Call on every rank with the same
    list."""
    loader.load_state_dict(list(states))
