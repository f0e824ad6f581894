# Prints the goroutines of a running Go program grouped by the function that
# started them and their stack size, with the stack each has in use, by
# reading runtime.allgs with gdb (the binary needs its DWARF, as `go build`
# leaves it). BENCHMARKS.md uses it to see which goroutine of a stream holds
# how much stack:
#
#   gdb -q -batch -p <pid> -ex 'source bench/goroutine-stacks.py'
#
# gdb stops the program while it reads, about 3 s for 30,000 goroutines.
import collections

import gdb

gdb.execute("set pagination off")
allgs = gdb.parse_and_eval("'runtime.allgs'")
counts = collections.Counter()
used = collections.defaultdict(list)
names = {}


def name(pc):
    if pc not in names:
        try:
            s = gdb.execute("info symbol 0x%x" % pc, to_string=True)
            names[pc] = s.split(" in section")[0].split(" + ")[0]
        except gdb.error:
            names[pc] = hex(pc)
    return names[pc]


DEAD = 6  # runtime._Gdead
for i in range(int(allgs["len"])):
    g = allgs["array"][i].dereference()
    if int(g["atomicstatus"]["value"]) == DEAD:
        continue
    lo, hi = int(g["stack"]["lo"]), int(g["stack"]["hi"])
    key = (name(int(g["startpc"])), hi - lo)
    counts[key] += 1
    used[key].append(hi - int(g["sched"]["sp"]))

for (fn, size), n in counts.most_common():
    u = sorted(used[(fn, size)])
    print("%6d  stack %6d  in use %d/%d/%d (min/median/max)  %s" % (n, size, u[0], u[len(u) // 2], u[-1], fn))
