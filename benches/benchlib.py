"""What the end-to-end benchmarks share: free ports, child processes with log files, waiting for
their output, RSS, the origin (nginx serving random files) and the load tools (iperf3 for
throughput, wrk for requests and latency)."""
import json, os, re, signal, socket, subprocess, time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20, ip="127.0.0.1"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((ip, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


class Procs:
    """Child processes, each writing to its own log file (a pipe nobody reads would fill up and
    stall the process under load)."""

    def __init__(self, work):
        self.procs = []
        self.work = work

    def start(self, args, **kw):
        log = os.path.join(self.work, f"proc-{len(self.procs)}.log")
        p = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True, **kw)
        p.log = log
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def read_until(proc, pattern, timeout=30, skip=0):
    """The `skip`-th match of `pattern` in the process's output, waiting for it."""
    deadline = time.time() + timeout
    rx = re.compile(pattern)
    while time.time() < deadline:
        with open(proc.log) as f:
            found = [m for m in (rx.search(line) for line in f) if m]
        if len(found) > skip:
            return found[skip]
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited before printing {pattern}: {open(proc.log).read()[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {pattern}")


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def iperf(port, seconds, streams=1, ip="127.0.0.1", tries=2):
    """GB/s. iperf3's server runs one test at a time and may still be closing the last one when
    the next control connection arrives ("control socket has closed unexpectedly"): that try is
    repeated once after a pause, and a second failure raises."""
    out = subprocess.run(
        ["iperf3", "-c", ip, "-p", str(port), "-t", str(seconds), "-P", str(streams), "-J", "-O", "1"],
        capture_output=True, text=True, timeout=seconds + 30)
    data = json.loads(out.stdout)
    if "error" in data:
        if tries > 1:
            time.sleep(1)
            return iperf(port, seconds, streams, ip, tries - 1)
        raise RuntimeError(data["error"])
    return data["end"]["sum_received"]["bits_per_second"] / 8 / 1e9  # GB/s


def wrk(port, path, seconds, conns, threads, host=None, close=False, latency=False, ip="127.0.0.1"):
    args = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s"]
    if latency:
        args.append("--latency")
    if host:
        args += ["-H", f"Host: {host}"]
    if close:
        args += ["-H", "Connection: close"]
    args.append(f"http://{ip}:{port}{path}")
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    rps = float(m.group(1)) if m else 0.0
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors and int(errors.group(1)) > 0:
        probe = subprocess.run(["curl", "-si", "-H", f"Host: {host or '127.0.0.1'}", f"http://{ip}:{port}{path}"],
                               capture_output=True, text=True).stdout[:300]
        raise RuntimeError(f"wrk saw {errors.group(1)} errors on port {port}{path}; a probe got: {probe}")

    def pct(name):
        m = re.search(rf"\s{name}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return None
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 1, "ms": 1000, "s": 1e6}[unit]

    return rps, pct("50"), pct("99")


def hold_idle(port, n):
    """Opens n idle connections to port; returns the sockets."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        socks.append(s)
    time.sleep(1.0)
    return socks


def start_agent(procs, work, binary, tag, ctrl, ca, tunnels):
    """`postern start` with a client file for the relay on `ctrl` trusting `ca`, opening
    `tunnels` ((kind, local port) pairs, or triples whose third item is more TOML for that
    `[[tunnel]]`); returns the process and the public URLs in order."""
    conf = os.path.join(work, f"client-{tag}.toml")
    with open(conf, "w") as f:
        f.write(f'server = "localhost:{ctrl}"\nca = "{ca}"\nclient_id = "bench"\nlocal_host = "127.0.0.1"\n')
        for kind, port, *extra in tunnels:
            f.write(f'[[tunnel]]\nkind = "{kind}"\nport = {port}\n' + "".join(extra))
    agent = procs.start([binary, "start", "--config", conf], env={**os.environ, "POSTERN_LOG": "warn"})
    urls = [read_until(agent, r"(tcp|http)://\S+", skip=i).group(0) for i in range(len(tunnels))]
    return agent, urls


def start_origin(procs, work, files):
    """nginx on a free port serving `files` ((name, size) pairs of random bytes) from `work`;
    returns (port, process)."""
    www = os.path.join(work, "www")
    os.makedirs(www, mode=0o755, exist_ok=True)
    for name, size in files:
        with open(os.path.join(www, name), "wb") as f:
            f.write(os.urandom(size))
        os.chmod(os.path.join(www, name), 0o644)
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  client_body_temp_path {work}/cb; proxy_temp_path {work}/pt; fastcgi_temp_path {work}/ft; uwsgi_temp_path {work}/ut; scgi_temp_path {work}/st;
  server {{ listen 127.0.0.1:{port}; root {www}; }} }}
""")
    proc = procs.start(["nginx", "-c", conf, "-p", work])
    wait_port(port)
    return port, proc
