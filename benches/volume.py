#!/usr/bin/env python3
"""What counting a volume quota costs: two relays and clients of the same build, one client
with a token that carries a volume (1000 TB a month, never reached) and one with a token that
limits nothing, each with a TCP tunnel to iperf3 and an HTTP tunnel to nginx. Rounds are interleaved
(plain, metered, plain, ...) and each round's metered / plain ratio is reported, with the
spread, so the machine's noise shows. With --baseline, a relay and client of another build
(the one before volume quotas) run beside them with a token that limits nothing, so the cost of
the metering change itself shows as "before / plain".

Usage: benches/volume.py [--rounds 5] [--seconds 4] [--binary target/release/postern] [--baseline BIN]
"""
import argparse, os, statistics, subprocess, sys, tempfile

from benchlib import Procs, free_port, iperf, read_until, start_origin, wait_port, wrk
from cpu_per_request import cpu_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def client(procs, work, binary, ctrl, ca, token, tag, iperf_port, nginx_port):
    conf = os.path.join(work, f"client-{tag}.toml")
    with open(conf, "w") as f:
        f.write(f'server = "localhost:{ctrl}"\nca = "{ca}"\nclient_id = "{tag}"\nlocal_host = "127.0.0.1"\n'
                f'token = "{token}"\n'
                f'[[tunnel]]\nkind = "tcp"\nport = {iperf_port}\n'
                f'[[tunnel]]\nkind = "http"\nport = {nginx_port}\nid = "{tag}"\n')
    agent = procs.start([binary, "start", "--config", conf], env={**os.environ, "POSTERN_LOG": "warn"})
    urls = [read_until(agent, r"(tcp|http)://\S+", skip=i).group(0) for i in range(2)]
    return int(urls[0].rsplit(":", 1)[1]), urls[1].split("://", 1)[1].split(":")[0], agent.pid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/postern"))
    ap.add_argument("--baseline", help="another build, measured with a plain token as 'before'")
    a = ap.parse_args()
    if not os.path.exists(a.binary):
        sys.exit(f"missing {a.binary}: cargo build --release -p postern")
    work = tempfile.mkdtemp(prefix="postern-volume-")
    os.chmod(work, 0o755)
    procs = Procs(work)
    try:
        ng_port, _ = start_origin(procs, work, (("1k", 1024), ("1m", 1 << 20)))
        ip_port = free_port()
        procs.start(["iperf3", "-s", "-p", str(ip_port)])
        wait_port(ip_port)

        def relay(binary, tag):
            state = os.path.join(work, f"state-{tag}")
            ctrl, http_port, admin = free_port(), free_port(), free_port()
            proc = procs.start([binary, "server", "--control-addr", f"127.0.0.1:{ctrl}", "--http-addr",
                                f"127.0.0.1:{http_port}", "--https-addr", "off", "--admin-addr",
                                f"127.0.0.1:{admin}", "--tcp-ports", "0", "--state-dir", state, "--log", "warn",
                                "--max-connections-per-ip", "100000"])
            read_until(proc, r"agents connect to")
            return state, ctrl, http_port, proc.pid

        def mint(binary, state, subject, *extra):
            out = subprocess.run([binary, "token", "mint", "--state-dir", state, "--subject", subject, "--ids",
                                  f"{subject}*", *extra], capture_output=True, text=True, check=True)
            return out.stdout.strip()

        def path(binary, tag, *extra):
            state, ctrl, http_port, relay_pid = relay(binary, tag)
            token = mint(binary, state, tag, *extra)
            tcp, host, agent_pid = client(procs, work, binary, ctrl, os.path.join(state, "ca.pem"), token, tag,
                                          ip_port, ng_port)
            return tcp, host, http_port, (relay_pid, agent_pid)

        # Each path has a relay and a client of its own, so none shares a process with another.
        paths = {"plain": path(a.binary, "plain"), "metered": path(a.binary, "metered", "--volume", "1000TB/month")}
        if a.baseline:
            paths["before"] = path(a.baseline, "before")
        # CPU µs per request: the relay's and the client's CPU time (from /proc) over a keep-alive
        # run, divided by its requests; steadier than rates on a shared machine.
        metrics = ["single GB/s", "4-stream GB/s", "keep-alive req/s", "1 MiB MB/s", "CPU µs/req"]
        res = {p: {m: [] for m in metrics} for p in paths}
        s = a.seconds
        for r in range(a.rounds):
            order = list(paths.items()) if r % 2 == 0 else list(reversed(paths.items()))
            for name, (tcp, host, http_port, pids) in order:
                res[name]["single GB/s"].append(iperf(tcp, s))
                res[name]["4-stream GB/s"].append(iperf(tcp, s, 4))
                before = sum(cpu_seconds(p) for p in pids)
                rps = wrk(http_port, "/1k", s, 32, 2, host)[0]
                res[name]["keep-alive req/s"].append(rps)
                res[name]["CPU µs/req"].append((sum(cpu_seconds(p) for p in pids) - before) / max(rps * s, 1) * 1e6)
                res[name]["1 MiB MB/s"].append(wrk(http_port, "/1m", s, 4, 2, host)[0] * (1 << 20) / 1e6)
                print(f"round {r + 1} {name}: " + ", ".join(f"{m}={v[-1]:.3f}" for m, v in res[name].items()),
                      flush=True)
        pairs = [("metered", "plain", "Metered (a volume claim) / plain")]
        if a.baseline:
            pairs.append(("before", "plain", "Before (the baseline build) / plain (this build)"))
        for num, den, title in pairs:
            print()
            print(f"{title}, {a.rounds} interleaved rounds of {s} s:")
            print()
            print(f"| metric | {den} (median) | {num} (median) | ratio of medians | per-round ratios (min–max) |")
            print("|---|---|---|---|---|")
            for m in metrics:
                p, q = res[den][m], res[num][m]
                ratios = [y / x for x, y in zip(p, q) if x]
                print(f"| {m} | {statistics.median(p):.3g} | {statistics.median(q):.3g} | "
                      f"{statistics.median(q) / statistics.median(p):.2f}× | {min(ratios):.2f}–{max(ratios):.2f} |")
    finally:
        procs.stop()


if __name__ == "__main__":
    main()
