"""The HTTP rows of benches/e2e.py made like-for-like (issue #16): what a user builds from nginx and
a TCP tunnel. A second nginx, the "front", routes by Host, with upstream keep-alive, to:

- the origin itself ("nginx"): the limit of any HTTP path through a proxy;
- bore's public port to the origin ("nginx + bore");
- rathole's (tcp transport) public port to the origin ("nginx + rathole").

postern's HTTP tunnel routes by Host itself, so it is measured as it is. The front uses
`worker_processes auto` (what a packaged nginx uses) and streams bodies (`proxy_buffering off`),
as postern does, so a 1 MiB response is not spooled to a temporary file."""
import os

from benchlib import free_port, wait_port

HOSTS = {"nginx": "origin.bench", "nginx + bore": "bore.bench", "nginx + rathole": "rathole.bench"}


def start_front(procs, work, upstreams):
    """Starts the front nginx; `upstreams` maps a path name of HOSTS to the port it proxies to.
    Returns the e2e paths (HTTP only: no iperf row)."""
    port = free_port()
    blocks = []
    for i, (name, target) in enumerate(upstreams.items()):
        blocks.append(f"""
  upstream up{i} {{ server 127.0.0.1:{target}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port}; server_name {HOSTS[name]};
    location / {{ proxy_pass http://up{i}; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header Host $host; proxy_buffering off; }} }}""")
    conf = os.path.join(work, "front.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes auto; daemon off; pid {work}/front.pid; error_log {work}/front.err;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 1000000;
  client_body_temp_path {work}/fcb; proxy_temp_path {work}/fpt; fastcgi_temp_path {work}/fft; uwsgi_temp_path {work}/fut; scgi_temp_path {work}/fst;
{"".join(blocks)}
}}
""")
    procs.start(["nginx", "-c", conf, "-p", work])
    wait_port(port)
    return {name: dict(iperf=None, http=port, host=HOSTS[name]) for name in upstreams}


def http_table(med, ratio):
    """postern's HTTP tunnel against each front path: the lines of a markdown table."""
    lines = ["postern's HTTP tunnel against nginx in front of each peer (Host routing, upstream keep-alive; "
             "higher is better, latency: lower is better):", "",
             "| metric | " + " | ".join(f"vs {n}" for n in HOSTS) + " |",
             "|---|" + "---|" * len(HOSTS)]
    for m in ("keep-alive req/s", "new-conn req/s", "1 MiB MB/s"):
        lines.append(f"| {m} | " + " | ".join(ratio("postern http", n, m) for n in HOSTS) + " |")
    for m in ("p50 µs", "p99 µs"):
        own = med.get("postern http", {}).get(m)
        cells = []
        for n in HOSTS:
            other = med.get(n, {}).get(m)
            cells.append(f"{own:.0f} vs {other:.0f} µs" if own and other else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines
