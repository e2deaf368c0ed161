"""The cluster rows of benches/e2e.py: two relays on a real redis-server, the agent on relay A.
"cluster local" enters at relay A (the agent's own relay), "cluster forwarded" at relay B, which
forwards over its peer link to A: HTTP through B's HTTP listener, TCP through B's copy of the
tunnel's port (on 127.0.0.2, since both relays share one machine)."""
import os, shutil

from benchlib import free_port, read_until, start_agent, wait_port

SECRET = "bench-cluster-secret-0123456789"


def start_cluster(procs, work, binary, ports):
    """Redis, relays A and B, and an agent on A (a TCP tunnel to iperf3, an HTTP tunnel to nginx);
    returns the two paths, or None without redis-server."""
    if not shutil.which("redis-server"):
        return None
    redis = free_port()
    procs.start(["redis-server", "--port", str(redis), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
    wait_port(redis)

    def relay(tag, tcp_bind, key=None):
        ctrl, http_port, admin = free_port(), free_port(), free_port()
        state = os.path.join(work, f"cluster-{tag}")
        args = [binary, "server", "--control-addr", f"127.0.0.1:{ctrl}", "--http-addr", f"127.0.0.1:{http_port}",
                "--https-addr", "off", "--admin-addr", f"127.0.0.1:{admin}", "--tcp-ports", "0",
                "--tcp-bind", tcp_bind, "--state-dir", state, "--log", "warn", "--max-connections-per-ip", "100000",
                "--cluster", f"redis://127.0.0.1:{redis}", "--cluster-secret", SECRET, "--relay-id", tag,
                "--peer-addr", "127.0.0.1:0"]
        if key:
            args += ["--token-key", key]
        p = procs.start(args)
        read_until(p, r"agents connect to")
        return p, ctrl, http_port, state

    _, a_ctrl, a_http, a_state = relay("a", "127.0.0.1")
    _, _, b_http, _ = relay("b", "127.0.0.2", key=os.path.join(a_state, "token.key"))
    tunnels = [("tcp", ports["iperf"]), ("http", ports["nginx"])]
    _, urls = start_agent(procs, work, binary, "cluster", a_ctrl, os.path.join(a_state, "ca.pem"), tunnels)
    tcp_port = int(urls[0].rsplit(":", 1)[1])
    host = urls[1].split("://", 1)[1].split(":")[0]
    wait_port(tcp_port, ip="127.0.0.2")
    return {
        "cluster local": dict(iperf=tcp_port, http=a_http, host=host),
        "cluster forwarded": dict(iperf=tcp_port, tcp_ip="127.0.0.2", http=b_http, host=host),
    }
