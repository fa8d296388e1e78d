"""Sums `perf report --sort pid --stdio` (stdin) by daemon and role, for bench/cluster.sh.

Arguments: a `ps -eL -o lwp=,pid=,ppid=,comm=` taken during the recording, then NAME=PID for each
daemon's master (and redis, postgres). A master's children are its broker (the one still called chatd)
and its sessions (retitled `chatd: NICK@ROOM`), the broker's threads by their names; a process
not in the ps is named by its command in the samples.
"""
import re
import sys

threads, procs = {}, {}
for line in open(sys.argv[1]):
    parts = line.split(None, 3)
    if len(parts) == 4:
        lwp, pid, ppid, comm = parts
        threads[lwp] = (pid, comm.strip())
        if lwp == pid:
            procs[pid] = (ppid, comm.strip())
daemons = dict(arg.split("=", 1) for arg in sys.argv[2:])
masters = {pid: name for name, pid in daemons.items()}


def role(tid, comm):
    pid, thread = threads.get(tid, (tid, comm))
    if pid in masters:
        if masters[pid] in ("redis", "postgres"):
            return f"{masters[pid]} (this benchmark's)"
        return f"{masters[pid]}: master"
    ppid, name = procs.get(pid, (None, comm))
    if ppid in masters:
        if masters[ppid] == "postgres":
            return "postgres (this benchmark's)"
        if name != "chatd":
            return f"{masters[ppid]}: sessions"
        return f"{masters[ppid]}: broker" + ("" if thread == "chatd" else f" ({thread})")
    if name.startswith("chatd:"):
        return "chatd sessions (node unknown)"
    return name


shares = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+(\d+):(.*)", line)
    if m:
        key = role(m.group(2), m.group(3).strip())
        shares[key] = shares.get(key, 0.0) + float(m.group(1))
print("| process | samples (%) |")
print("| --- | ---: |")
for key, share in sorted(shares.items(), key=lambda kv: -kv[1])[:14]:
    print(f"| {key} | {share:.1f} |")
