"""`python3 -m torch.distributed.run`, with a fix for Debian's torch 1.13 under Python 3.11:
there Std.from_str("0") (the default --redirects/--tee) returns None, because Python 3.11 no
longer lists an IntFlag's zero member when iterating, and the launcher then fails in to_map."""
import re
import sys

from torch.distributed import run
from torch.distributed.elastic.multiprocessing import api


def _from_str(cls, vm):
    if re.match(api._VALUE_REGEX, vm):
        return cls(int(vm))
    if re.match(api._MAPPING_REGEX, vm):
        return {int(i): cls(int(v)) for i, v in (m.split(":") for m in vm.split(","))}
    raise ValueError(f"{vm} does not match: <{api._VALUE_REGEX}> or <{api._MAPPING_REGEX}>")


if api.Std.from_str("0") is None:
    api.Std.from_str = classmethod(_from_str)

if __name__ == "__main__":
    sys.exit(run.main())
