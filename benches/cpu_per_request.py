#!/usr/bin/env python3
"""CPU time per HTTP request of each process on two paths (issue #16): postern's HTTP tunnel
(relay, agent) and nginx in front of bore (nginx, bore server, bore client), each in front of
the same nginx origin, under `wrk -c32` on a 1 KiB file.

Throughput on a shared 2-core machine moves with whatever else runs; the CPU seconds each
process spends per request (utime + stime from /proc, children included) say where a path's
cost lies. Rounds are interleaved; `--candidate` adds a second postern build.

Usage: benches/cpu_per_request.py [--binary B] [--candidate C] [--rounds 3] [--seconds 4]
       [--close] [--peers target/peers]
"""
import argparse, os, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402
from benchlib import Procs, read_until, start_origin, wrk  # noqa: E402
from front import start_front  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def tree(pid):
    """pid and every descendant."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def cpu_seconds(pid):
    total = 0
    for p in tree(pid):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / HZ


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(root, "target/release/postern"))
    ap.add_argument("--candidate")
    ap.add_argument("--peers", default=os.path.join(root, "target/peers"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--close", action="store_true", help="a new connection per request")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="postern-cpu-")
    os.chmod(work, 0o755)
    procs = Procs(work)
    try:
        ng, origin = start_origin(procs, work, (("1k", 1024),))
        e2e.PORTS.update(iperf=ng, nginx=ng)
        paths = {}
        for tag, binary in (("postern", a.binary), ("candidate", a.candidate)):
            if binary:
                p = e2e.start_postern(procs, work, binary, tag)
                paths[f"{tag} http"] = (p["http"], p["host"], {"relay": p["relay"].pid, "agent": p["agent"].pid})
        bore = os.path.join(a.peers, "bin/bore")
        bore_srv = procs.start([bore, "server", "--min-port", "30000", "--max-port", "39999"])
        time.sleep(0.5)
        bore_cli = procs.start([bore, "local", str(ng), "--to", "127.0.0.1"])
        bport = int(read_until(bore_cli, r"listening at 127\.0\.0\.1:(\d+)").group(1))
        front = start_front(procs, work, {"nginx + bore": bport})["nginx + bore"]
        front_pid = procs.procs[-1].pid
        paths["nginx + bore"] = (front["http"], front["host"],
                                 {"nginx": front_pid, "bore server": bore_srv.pid, "bore client": bore_cli.pid})
        time.sleep(1)
        for r in range(a.rounds):
            for name, (port, host, pids) in paths.items():
                groups = {**pids, "origin": origin.pid}
                before = {g: cpu_seconds(p) for g, p in groups.items()}
                rps, _, _ = wrk(port, "/1k", a.seconds, 32, 2, host, close=a.close)
                after = {g: cpu_seconds(p) for g, p in groups.items()}
                n = max(rps * a.seconds, 1)
                per = {g: (after[g] - before[g]) / n * 1e6 for g in groups}
                own = sum(v for g, v in per.items() if g != "origin")
                print(f"round {r + 1} {name}: {rps:.0f} req/s; CPU µs per request: "
                      + ", ".join(f"{g} {v:.1f}" for g, v in per.items()) + f"; the path without the origin {own:.1f}",
                      flush=True)
    finally:
        procs.stop()


if __name__ == "__main__":
    main()
