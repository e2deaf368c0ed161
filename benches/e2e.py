#!/usr/bin/env python3
"""Side-by-side benchmark: direct loopback vs postern (TCP and HTTP tunnels) vs bore vs rathole
(tcp and noise transports) vs nginx in front of bore and rathole (benches/front.py), all on
127.0.0.1, in one run.

Each path is measured in interleaved rounds (direct, postern-tcp, postern-http, bore,
rathole-tcp, rathole-noise, the two cluster paths of benches/cluster.py when redis-server is
installed, then again) and the median is reported, with ratios against direct, against each
peer, and of the forwarded cluster path against the local one. Tools: nginx (1 KiB and 1 MiB files), iperf3, wrk. Writes a markdown
table (stdout, and into docs/benchmarks.md between the BENCH markers with --write).

Usage: benches/e2e.py [--rounds 3] [--seconds 5] [--peers DIR] [--write]
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


from benchlib import Procs, free_port, hold_idle, iperf, read_until, rss_kib, start_agent, start_origin, wait_port, wrk
from cluster import start_cluster
from front import http_table, start_front


def start_postern(procs, work, binary, tag, inspect=False):
    """A relay and an agent from `binary`: a TCP tunnel to iperf3, a TCP and an HTTP tunnel to nginx,
    and with `inspect` a second HTTP tunnel to nginx whose requests the inspector captures."""
    ctrl, http_port, admin = free_port(), free_port(), free_port()
    state = os.path.join(work, f"pstate-{tag}")
    relay = procs.start([binary, "server", "--control-addr", f"127.0.0.1:{ctrl}", "--http-addr", f"127.0.0.1:{http_port}",
                         "--https-addr", "off", "--admin-addr", f"127.0.0.1:{admin}", "--tcp-ports", "0",
                         "--state-dir", state, "--log", "warn", "--max-connections-per-ip", "100000"])
    read_until(relay, r"agents connect to")
    tunnels = [("tcp", PORTS["iperf"]), ("tcp", PORTS["nginx"]), ("http", PORTS["nginx"])]
    if inspect:
        tunnels.append(("http", PORTS["nginx"], 'id = "inspected"\ninspect = true\n'))
    agent, urls = start_agent(procs, work, binary, tag, ctrl, os.path.join(state, "ca.pem"), tunnels)
    host = lambda url: url.split("://", 1)[1].split(":")[0]
    return dict(relay=relay, agent=agent, iperf=int(urls[0].rsplit(":", 1)[1]), tcp=int(urls[1].rsplit(":", 1)[1]),
                host=host(urls[2]), http=http_port, inspected=host(urls[3]) if inspect else None)


PORTS = {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--peers", default=os.environ.get("PEERS_DIR", "/tmp/peers"))
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    ap.add_argument("--candidate", help="a second postern binary, measured as extra rows (A/B for a tuning change)")
    ap.add_argument("--only", help="comma-separated paths to measure (direct is always measured)")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/postern"),
                    help="the postern build measured as 'postern' (default: target/release/postern)")
    a = ap.parse_args()

    postern = a.binary
    bore = os.path.join(a.peers, "bin/bore")
    rathole = os.path.join(a.peers, "bin/rathole")
    for tool in (postern, bore, rathole):
        if not os.path.exists(tool):
            sys.exit(f"missing {tool}: run benches/e2e.sh, which builds and installs everything")

    work = tempfile.mkdtemp(prefix="postern-bench-")
    # nginx workers may run as another user: they must be able to read the files.
    os.chmod(work, 0o755)
    procs = Procs(work)
    try:
        # Origin: nginx with a 1 KiB and a 1 MiB file, and iperf3.
        ng_port, _ = start_origin(procs, work, (("1k", 1024), ("1m", 1 << 20)))
        ip_port = free_port()
        procs.start(["iperf3", "-s", "-p", str(ip_port)])
        wait_port(ip_port)

        PORTS.update(iperf=ip_port, nginx=ng_port)
        pst = start_postern(procs, work, postern, "main", inspect=True)
        relay, agent = pst["relay"], pst["agent"]
        p_iperf, p_ng_tcp, p_host, http_port = pst["iperf"], pst["tcp"], pst["host"], pst["http"]
        cand = start_postern(procs, work, a.candidate, "cand") if a.candidate else None
        cluster = start_cluster(procs, work, postern, PORTS)

        # bore (plaintext) to iperf3 and nginx.
        bore_srv = procs.start([bore, "server", "--min-port", "30000", "--max-port", "39999"])
        time.sleep(0.5)
        b_ports = []
        for port in (ip_port, ng_port):
            b = procs.start([bore, "local", str(port), "--to", "127.0.0.1"])
            b_ports.append(int(read_until(b, r"listening at 127\.0\.0\.1:(\d+)").group(1)))
        _ = bore_srv

        # rathole: tcp and noise transports.
        keys = subprocess.run([rathole, "--genkey"], capture_output=True, text=True).stdout
        priv = re.search(r"Private Key:\s*\n?\s*(\S+)", keys).group(1)
        pub = re.search(r"Public Key:\s*\n?\s*(\S+)", keys).group(1)
        rat = {}
        for transport in ("tcp", "noise"):
            rctrl, r_ip, r_ng = free_port(), free_port(), free_port()
            extra_s = f'\n[server.transport.noise]\nlocal_private_key = "{priv}"\n' if transport == "noise" else ""
            extra_c = f'\n[client.transport.noise]\nremote_public_key = "{pub}"\n' if transport == "noise" else ""
            with open(os.path.join(work, f"rs-{transport}.toml"), "w") as f:
                f.write(f"""[server]
bind_addr = "127.0.0.1:{rctrl}"
[server.transport]
type = "{transport}"{extra_s}
[server.services.iperf]
token = "t"
bind_addr = "127.0.0.1:{r_ip}"
[server.services.nginx]
token = "t"
bind_addr = "127.0.0.1:{r_ng}"
""")
            with open(os.path.join(work, f"rc-{transport}.toml"), "w") as f:
                f.write(f"""[client]
remote_addr = "127.0.0.1:{rctrl}"
[client.transport]
type = "{transport}"{extra_c}
[client.services.iperf]
token = "t"
local_addr = "127.0.0.1:{ip_port}"
[client.services.nginx]
token = "t"
local_addr = "127.0.0.1:{ng_port}"
""")
            procs.start([rathole, "-s", os.path.join(work, f"rs-{transport}.toml")])
            time.sleep(0.3)
            procs.start([rathole, "-c", os.path.join(work, f"rc-{transport}.toml")])
            rat[transport] = (r_ip, r_ng)
        for transport, (r_ip, r_ng) in rat.items():
            wait_port(r_ip)
            wait_port(r_ng)
        front = start_front(procs, work, {"nginx": ng_port, "nginx + bore": b_ports[1],
                                          "nginx + rathole": rat["tcp"][1]})
        time.sleep(1.0)

        paths = {
            "direct": dict(iperf=ip_port, http=ng_port, host=None),
            "postern tcp": dict(iperf=p_iperf, http=p_ng_tcp, host=None),
            "postern http": dict(iperf=None, http=http_port, host=p_host),
            # The same relay and agent, a tunnel whose every request the inspector captures.
            "postern http inspected": dict(iperf=None, http=http_port, host=pst["inspected"]),
            "bore": dict(iperf=b_ports[0], http=b_ports[1], host=None),
            "rathole tcp": dict(iperf=rat["tcp"][0], http=rat["tcp"][1], host=None),
            "rathole noise": dict(iperf=rat["noise"][0], http=rat["noise"][1], host=None),
        }
        paths.update(front)
        if cluster:
            paths.update(cluster)
        if cand:
            paths["candidate tcp"] = dict(iperf=cand["iperf"], http=cand["tcp"], host=None)
            paths["candidate http"] = dict(iperf=None, http=cand["http"], host=cand["host"])
        if a.only:
            keep = {"direct", *a.only.split(",")}
            paths = {k: v for k, v in paths.items() if k in keep}
        metrics = ["single GB/s", "4-stream GB/s", "keep-alive req/s", "new-conn req/s", "1 MiB MB/s", "p50 µs",
                   "p99 µs"]
        results = {p: {m: [] for m in metrics} for p in paths}
        s = a.seconds
        rss_idle = (rss_kib(relay.pid), rss_kib(agent.pid))
        rss_cand = (rss_kib(cand["relay"].pid), rss_kib(cand["agent"].pid)) if cand else None
        rss_load = [0, 0]
        for r in range(a.rounds):
            for name, p in paths.items():
                res = results[name]
                if p["iperf"]:
                    ip = p.get("tcp_ip", "127.0.0.1")
                    res["single GB/s"].append(iperf(p["iperf"], s, ip=ip))
                    res["4-stream GB/s"].append(iperf(p["iperf"], s, 4, ip=ip))
                rps, _, _ = wrk(p["http"], "/1k", s, 32, 2, p["host"])
                res["keep-alive req/s"].append(rps)
                if name == "postern tcp":
                    rss_load = [max(rss_load[0], rss_kib(relay.pid)), max(rss_load[1], rss_kib(agent.pid))]
                rps, _, _ = wrk(p["http"], "/1k", s, 32, 2, p["host"], close=True)
                res["new-conn req/s"].append(rps)
                rps, _, _ = wrk(p["http"], "/1m", s, 4, 2, p["host"])
                res["1 MiB MB/s"].append(rps * (1 << 20) / 1e6)
                _, p50, p99 = wrk(p["http"], "/1k", s, 1, 1, p["host"], latency=True)
                res["p50 µs"].append(p50)
                res["p99 µs"].append(p99)
                print(f"round {r + 1} {name}: " + ", ".join(f"{k}={v[-1]:.3f}" for k, v in res.items() if v), flush=True)

        # Idle connections: RSS per 1,000 through the postern TCP tunnel.
        before = (rss_kib(relay.pid), rss_kib(agent.pid))
        socks = hold_idle(p_ng_tcp, 1000)
        after = (rss_kib(relay.pid), rss_kib(agent.pid))
        for sck in socks:
            sck.close()

        med = {p: {m: (statistics.median(v) if v else None) for m, v in res.items()} for p, res in results.items()}
        direct = med["direct"]
        lines = []
        lines.append(f"Medians of {a.rounds} interleaved rounds, {s} s each; ratio = path / direct "
                     "(latency: added µs over direct).")
        lines.append("")
        lines.append("| path | " + " | ".join(metrics) + " |")
        lines.append("|---|" + "---|" * len(metrics))
        for p in paths:
            cells = []
            for m in metrics:
                v = med[p][m]
                if v is None:
                    cells.append("-")
                elif m.endswith("µs"):
                    cells.append(f"{v:.0f} (+{v - direct[m]:.0f})" if p != "direct" else f"{v:.0f}")
                elif p == "direct":
                    cells.append(f"{v:.3g}")
                else:
                    cells.append(f"{v:.3g} ({v / direct[m]:.2f}×)")
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Ratios of postern against each peer (higher is better for postern; latency: lower added is better):")
        lines.append("")
        lines.append("| metric | vs bore | vs rathole tcp | vs rathole noise |")
        lines.append("|---|---|---|---|")
        peers = [q for q in ("bore", "rathole tcp", "rathole noise")]

        def ratio(x, q, m):
            v, w = med.get(x, {}).get(m), med.get(q, {}).get(m)
            return f"{v / w:.2f}×" if v and w else "-"

        for x, ms in (("postern tcp", metrics[:5]), ("postern http", metrics[2:5])):
            for m in ms:
                lines.append(f"| {x} {m} | " + " | ".join(ratio(x, q, m) for q in peers) + " |")
        if "postern http" in med and any(n in med for n in ("nginx", "nginx + bore", "nginx + rathole")):
            lines.append("")
            lines += http_table(med, ratio)
        if "cluster forwarded" in med and "cluster local" in med:
            lines.append("")
            lines.append("Cluster: entering at relay B (forwarded over the peer link) against entering at relay A "
                         "(the agent's relay), same run:")
            lines.append("")
            lines.append("| metric | forwarded / local | goal |")
            lines.append("|---|---|---|")
            for m, goal in (("single GB/s", "≥ 0.6×"), ("4-stream GB/s", ""), ("keep-alive req/s", "≥ 0.6×"),
                            ("new-conn req/s", "")):
                lines.append(f"| {m} | {ratio('cluster forwarded', 'cluster local', m)} | {goal} |")
            fwd, loc = med["cluster forwarded"]["p50 µs"], med["cluster local"]["p50 µs"]
            lines.append(f"| p50 added by forwarding | {fwd - loc:+.0f} µs | ≤ 150 µs |")
        if "postern http inspected" in med and "postern http" in med:
            lines.append("")
            lines.append("The request inspector's cost: a tunnel whose requests are captured against one whose are "
                         "not, same relay and agent, same run (goal ≥ 0.90×):")
            lines.append("")
            lines.append("| metric | inspected / not |")
            lines.append("|---|---|")
            for m in ("keep-alive req/s", "new-conn req/s", "1 MiB MB/s"):
                lines.append(f"| {m} | {ratio('postern http inspected', 'postern http', m)} |")
        if cand:
            lines.append("")
            lines.append(f"Candidate `{a.candidate}` against this build (A/B, same run):")
            lines.append("")
            lines.append("| metric | tcp | http |")
            lines.append("|---|---|---|")
            for m in metrics[:5]:
                lines.append(f"| {m} | {ratio('candidate tcp', 'postern tcp', m)} | "
                             f"{ratio('candidate http', 'postern http', m)} |")
            if "postern tcp" in med:
                lines.append(f"| p50 µs (lower is better) | {ratio('candidate tcp', 'postern tcp', 'p50 µs')} | "
                             f"{ratio('candidate http', 'postern http', 'p50 µs')} |")
            lines.append("")
            lines.append(f"Candidate RSS idle: relay {rss_cand[0] / 1024:.1f} MiB, client {rss_cand[1] / 1024:.1f} MiB.")
        lines.append("")
        lines.append(f"Memory: relay RSS idle {rss_idle[0] / 1024:.1f} MiB, under load {rss_load[0] / 1024:.1f} MiB; "
                     f"client RSS idle {rss_idle[1] / 1024:.1f} MiB, under load {rss_load[1] / 1024:.1f} MiB.")
        lines.append(f"1,000 idle tunnelled connections: relay +{(after[0] - before[0]):.0f} KiB "
                     f"({(after[0] - before[0]) / 1000:.1f} KiB each), client +{(after[1] - before[1]):.0f} KiB "
                     f"({(after[1] - before[1]) / 1000:.1f} KiB each).")
        cpu = subprocess.run(["sh", "-c", "nproc; grep -m1 'model name' /proc/cpuinfo | cut -d: -f2; uname -r"],
                             capture_output=True, text=True).stdout.split("\n")
        lines.append("")
        lines.append(f"Machine: {cpu[0].strip()} cores,{cpu[1]}, Linux {cpu[2].strip()}, {time.strftime('%Y-%m-%d')}.")
        table = "\n".join(lines)
        print("\n" + table)
        if a.write:
            path = os.path.join(ROOT, "docs/benchmarks.md")
            doc = open(path).read()
            start, end = "<!-- BENCH:START -->", "<!-- BENCH:END -->"
            if start in doc:
                doc = doc.split(start)[0] + start + "\n" + table + "\n" + end + doc.split(end, 1)[1]
            else:
                doc += f"\n## Side by side with bore and rathole (issue #7)\n\n`benches/e2e.sh`\n\n{start}\n{table}\n{end}\n"
            open(path, "w").write(doc)
    except Exception:
        for p in procs.procs[2:4]:
            print(f"--- {p.args[:2]} log tail:\n" + open(p.log).read()[-3000:], file=sys.stderr)
        raise
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
