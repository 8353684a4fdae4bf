"""Where this process sits in a distributed job: torch.distributed, then torchrun's variables."""
import os


def default_rank_world(rank=None, world_size=None):
    """(rank, world_size): explicit values win; then an initialised torch.distributed process
    group; then the RANK/WORLD_SIZE environment variables that torchrun sets; else (0, 1)."""
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    r, w = 0, 1
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            r, w = dist.get_rank(), dist.get_world_size()
        elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            r, w = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ImportError:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            r, w = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return (r if rank is None else int(rank)), (w if world_size is None else int(world_size))
