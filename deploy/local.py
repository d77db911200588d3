"""One machine, many cores: N app replicas on loopback ports behind Debian's nginx, with session affinity.

    python deploy/local.py [--replicas 2] [--port 8501] [--listen 127.0.0.1] [--model PATH] [--no-warm]

Starts `streamlit run app.py` N times (ports --port+1 ...), warms each one (deploy/warm.py: every
page once) before nginx sends it students, then runs nginx in the foreground with
deploy/nginx.conf.template filled in, its pid, logs and temp files in a folder of its own (no root,
no /etc/nginx). Students open http://LISTEN:PORT. Ctrl-C (or SIGTERM) stops everything. A replica that dies is
started again (and warmed) unless --no-restart; the sessions it held reconnect to another replica
meanwhile and stay there.

One replica is one Python process, so it uses about one core: run about one replica per core
(and OMP_NUM_THREADS=1 so torch's threads do not fight across replicas). Used as a library by the
classroom benchmark (`--replicas`) and tests/test_deploy.py: `with Cluster(2) as c: c.url, c.kill(0)`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(HERE))
from classroom import Server  # noqa: E402
from stclient import wait_healthy  # noqa: E402
from warm import warm  # noqa: E402

TEMPLATE = HERE / "nginx.conf.template"


def render(prefix: Path, listen: str, ports: list[int]) -> str:
    """deploy/nginx.conf.template for replicas on 127.0.0.1:`ports`; replica i is called r{i}."""
    blanks = {
        "POOL": "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in ports),
        "PINNED": "\n".join(f"    upstream vx_r{i} {{ server 127.0.0.1:{p}; }}" for i, p in enumerate(ports)),
        "ROUTES": "\n".join(f"        r{i} vx_r{i};" for i in range(len(ports))),
        "SERVED": "\n".join(f'        "~(^| )127\\.0\\.0\\.1:{p}$" r{i};' for i, p in enumerate(ports)),
        "PREFIX": str(prefix), "LISTEN": listen,
    }
    text = TEMPLATE.read_text()
    for name, value in blanks.items():
        text = text.replace("{{" + name + "}}", value)
    return text


class Cluster:
    """N replicas and nginx in front, started on enter and stopped on exit."""

    def __init__(self, replicas: int = 2, *, port: int = 8501, listen: str = "127.0.0.1", app_dir: Path = ROOT,
                 model: str | None = None, warm_up: bool = True, threads: int | None = 1,
                 replica_ports: list[int] | None = None):
        if not shutil.which("nginx"):
            raise RuntimeError("nginx is not installed (apt-get install -y nginx)")
        self.n, self.port, self.listen, self.app_dir, self.model = replicas, port, listen, Path(app_dir), model
        self.warm_up = warm_up
        # students may download hub models unless the machine says offline (the benchmark's servers are offline)
        self.env = {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0")} | (
            {"OMP_NUM_THREADS": str(threads)} if threads else {})
        self.ports = replica_ports or [port + 1 + i for i in range(replicas)]
        self.replicas: list[Server | None] = [None] * replicas
        self.prefix = Path(tempfile.mkdtemp(prefix="vx-nginx-"))
        self.nginx: subprocess.Popen | None = None
        self.url = f"http://{'127.0.0.1' if listen in ('0.0.0.0', '') else listen}:{port}"
        self.warm_seconds: list[float] = []

    # ------------------------------------------------------------------ replicas

    def start_replica(self, i: int):
        server = Server(self.app_dir, self.ports[i], model=self.model, env=self.env)
        if self.warm_up:
            t0 = time.monotonic()
            errors = asyncio.run(warm(server.url))
            self.warm_seconds.append(time.monotonic() - t0)
            if errors:
                server.stop()
                raise RuntimeError(f"replica r{i} shows errors while warming: {errors[:3]}")
        self.replicas[i] = server

    def kill(self, i: int):
        """Kill replica i at once (SIGKILL: a crash, not a shutdown)."""
        server = self.replicas[i]
        if server is not None:
            server.proc.kill()
            server.proc.wait()
            server.log.close()
            self.replicas[i] = None

    def pids(self) -> list[int]:
        return [s.pid for s in self.replicas if s is not None]

    def replica_of(self, name: str) -> int:
        return int(name.removeprefix("r"))

    # ------------------------------------------------------------------ nginx

    def start_nginx(self):
        for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:  # nginx started by root runs its worker as "nobody": uploads spool here
                os.chown(self.prefix / sub, pwd.getpwnam("nobody").pw_uid, -1)
        self.prefix.chmod(0o755)
        conf = self.prefix / "nginx.conf"
        conf.write_text(render(self.prefix, f"{self.listen}:{self.port}", self.ports))
        test = subprocess.run(["nginx", "-t", "-q", "-p", str(self.prefix), "-c", str(conf)], capture_output=True, text=True)
        if test.returncode:
            raise RuntimeError(f"nginx rejects the config:\n{test.stderr}")
        self.nginx = subprocess.Popen(["nginx", "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off;"],
                                      stdout=subprocess.DEVNULL, stderr=open(self.prefix / "nginx.out", "w"))
        wait_healthy(self.url, proc=self.nginx, seconds=30)

    def access_log(self) -> list[str]:
        path = self.prefix / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> Cluster:
        try:
            for i in range(self.n):
                self.start_replica(i)
            self.start_nginx()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.nginx is not None:
            self.nginx.send_signal(signal.SIGQUIT)  # graceful: finish answers in flight
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
        for server in self.replicas:
            if server is not None:
                server.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def watch(self, restart: bool = True):
        """Until Ctrl-C or nginx exits: start a dead replica again (warmed)."""
        while self.nginx.poll() is None:
            for i, server in enumerate(self.replicas):
                if restart and (server is None or server.proc.poll() is not None):
                    print(f"replica r{i} (port {self.ports[i]}) is down: starting it again", flush=True)
                    if server is not None:
                        server.log.close()
                    self.start_replica(i)
            time.sleep(2)


def stop(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicas", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    ap.add_argument("--port", type=int, default=8501, help="nginx listens here; replicas use the next ports")
    ap.add_argument("--listen", default="127.0.0.1", help="0.0.0.0 to serve a classroom network")
    ap.add_argument("--model", help="the replicas' default model (a checkpoint path or hub id)")
    ap.add_argument("--no-warm", action="store_true", help="do not warm replicas before serving")
    ap.add_argument("--no-restart", action="store_true", help="leave a dead replica dead")
    a = ap.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background (SIGINT ignored there)
        signal.signal(sig, stop)
    cluster = Cluster(a.replicas, port=a.port, listen=a.listen, model=a.model, warm_up=not a.no_warm)
    with cluster:
        print(f"ViT Explorer: {cluster.url} -> {a.replicas} replicas on ports {cluster.ports} "
              f"(nginx prefix {cluster.prefix}; warm-up {', '.join(f'{s:.0f} s' for s in cluster.warm_seconds) or 'off'})",
              flush=True)
        try:
            cluster.watch(restart=not a.no_restart)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
