"""One rank of a torchrun job for test_distributed.py (not a test itself).

argv: data_path out_dir mode [json options]. Modes:
  once     every order x remainder x drop_last: writes labels_<cfg>_<rank>.json per config
  stop     reads until this rank's stop batch, gathers every rank's state to states.json
  resume   load_elastic from states.json, finish the epoch, record the next epoch's length
  crash    saves {"state", "seen"} after each batch (atomically) to rank_<rank>.json; the rank
           `kill_rank` dies (os._exit) right after consuming batch `kill_at`, before saving it
"""
import json
import os
import sys

import torch.distributed as dist

import ferry


def save_atomically(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def labels(batch):
    return [int(x) for x in batch["label"]]


def main():
    data, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    opt = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    def loader(order="quasi_random", remainder="pad", drop_last=False):
        return ferry.Loader(data, batch_size=opt.get("batch_size", 4), order=order, seed=5,
                            remainder=remainder, drop_last=drop_last, output="numpy",
                            num_threads=1, window_pages=2)

    if mode == "once":
        for order in ("sequential", "random", "quasi_random"):
            for remainder in ("pad", "drop"):
                for drop_last in (False, True):
                    with loader(order, remainder, drop_last) as l:
                        l.set_epoch(1)
                        seen = [labels(b) for b in l]
                        assert l.epoch == 2, "one for loop is one epoch"
                    save_atomically(f"{out}/labels_{order}_{remainder}_{int(drop_last)}_{rank}.json", seen)
    elif mode == "stop":
        l = loader(opt["order"], opt.get("remainder", "pad"))
        stop = opt["stops"][rank]
        seen = []
        it = iter(l)
        for _ in range(stop):  # no batch fetched past the stop: the state holds exactly these
            b = next(it, None)
            if b is None:
                break
            seen += labels(b)
        save_atomically(f"{out}/before_{rank}.json", seen)
        states = ferry.distributed.gather_state(l)
        if rank == 0:
            save_atomically(f"{out}/states.json", states)
    elif mode == "resume":
        l = loader(opt["order"], opt.get("remainder", "pad"))
        with open(opt["states"]) as f:
            states = json.load(f)
        if isinstance(states, dict):  # per-rank files gathered by the test
            states = [states[k] for k in sorted(states)]
        ferry.distributed.load_elastic(l, states)
        seen = [x for b in l for x in labels(b)]
        save_atomically(f"{out}/after_{rank}.json", {"seen": seen, "epoch": l.epoch,
                                                      "next_len": len(l),
                                                      "next_samples": len(l.epoch_order())})
    elif mode == "crash":
        l = loader(opt["order"])
        seen = []
        path = f"{out}/rank_{rank}.json"
        save_atomically(path, {"state": l.state_dict(), "seen": seen})
        for i, b in enumerate(l):
            if rank == opt["kill_rank"] and i == opt["kill_at"]:
                os._exit(3)  # consumed batch i, never saved it: it comes again after the restart
            seen += labels(b)
            save_atomically(path, {"state": l.state_dict(), "seen": seen})
        dist.barrier()  # the job fails here when a rank died
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
