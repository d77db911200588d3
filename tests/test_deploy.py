"""deploy/: the Kubernetes manifests against the API schemas and against each other, the image's
files against the repository (and serving every page), the nginx
template against nginx and Streamlit's config, and (slow) a real run through nginx: two replicas,
a few students, one replica killed mid-lesson."""

import asyncio
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
sys.path.insert(0, str(DEPLOY))
sys.path.insert(0, str(ROOT / "benchmarks"))
K8S_VERSION = "1.33"
NGINX = (DEPLOY / "nginx.conf.template").read_text()
STREAMLIT = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())


def manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def nginx_value(directive: str) -> str:
    return re.search(rf"^\s*{directive}\s+([^;]+);", NGINX, re.M).group(1)


def container(docs) -> dict:
    return docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def test_kustomization_lists_every_manifest():
    docs = manifests()
    listed = set(docs["Kustomization"]["resources"])
    assert listed == {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("kind", ["Deployment", "Service", "Ingress", "HorizontalPodAutoscaler",
                                  "PersistentVolumeClaim", "Job"])
def test_manifest_matches_the_kubernetes_schema(kind):
    doc = manifests()[kind]
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION


def test_the_benchmark_checks_the_view_parameters_the_app_writes():
    import classroom
    import ui

    assert classroom.VIEW_PARAMS == ui.URL_KEYS


def test_the_validator_rejects_a_misspelt_field():
    doc = manifests()["Deployment"]
    c = doc["spec"]["template"]["spec"]["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_probes_ports_and_names_agree():
    docs = manifests()
    c = container(docs)
    port = int(c["args"][c["args"].index("--server.port") + 1])
    assert c["ports"] == [{"name": "http", "containerPort": port}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/_stcore/health", "port": "http"}
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"] == labels == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    backend = docs["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": docs["Service"]["metadata"]["name"], "port": {"name": "http"}}
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    claim = docs["PersistentVolumeClaim"]["metadata"]["name"]
    for kind in ("Deployment", "Job"):
        assert docs[kind]["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim
    # the image's own command serves on the same port, and the warm-up hook it runs is in the image
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"EXPOSE {port}" in dockerfile and f'"--server.port", "{port}"' in dockerfile
    warm = c["lifecycle"]["postStart"]["exec"]["command"]
    assert warm[1] == "deploy/warm.py" and f"127.0.0.1:{port}" in warm[3]
    assert "COPY deploy/warm.py" in dockerfile and "COPY benchmarks/stclient.py" in dockerfile
    env = {e["name"]: e["value"] for e in c["env"]}
    assert f"HF_HOME={env['HF_HOME']}" in dockerfile and f"VIT_EXPLORER_MODELS={env['VIT_EXPLORER_MODELS']}" in dockerfile


def test_ingress_affinity_matches_the_nginx_config():
    notes = manifests()["Ingress"]["metadata"]["annotations"]
    ing = {k.removeprefix("nginx.ingress.kubernetes.io/"): v for k, v in notes.items()}
    cookie = re.search(r'Set-Cookie "(\w+)=\$vx_served', NGINX).group(1)
    assert f"$cookie_{cookie}" in NGINX
    assert ing["affinity"] == "cookie" and ing["session-cookie-name"] == cookie
    assert ing["session-cookie-change-on-failure"] == "true" and ing["affinity-mode"] == "persistent"
    assert ing["proxy-read-timeout"] + "s" == nginx_value("proxy_read_timeout")
    assert ing["proxy-send-timeout"] + "s" == nginx_value("proxy_send_timeout")
    assert ing["proxy-buffering"] == nginx_value("proxy_buffering") == "off"
    assert ing["proxy-body-size"] == nginx_value("client_max_body_size")
    # the proxy must let through the largest upload Streamlit accepts
    assert int(nginx_value("client_max_body_size").removesuffix("m")) > STREAMLIT["server"]["maxUploadSize"]


def test_nginx_accepts_the_rendered_config(tmp_path):
    from local import render

    if not shutil.which("nginx"):
        pytest.fail("nginx is not installed: apt-get install -y nginx")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / sub).mkdir(parents=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(tmp_path, "127.0.0.1:8080", [8081, 8082, 8083]))
    check = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    text = conf.read_text()
    assert "{{" not in text
    assert re.findall(r"^\s*upstream (vx_r\d+) \{ server 127\.0\.0\.1:(\d+); \}", text, re.M) == [
        ("vx_r0", "8081"), ("vx_r1", "8082"), ("vx_r2", "8083")]


@pytest.mark.slow
def test_sessions_stay_on_their_replica_and_survive_a_killed_one():
    """Two replicas behind nginx, six students uploading their photos and doing the whole lesson; replica
    r0 is killed a few seconds in. Every session stays on one replica (uploads and pictures too),
    both replicas get students, r0's sessions reconnect to r1 within 5 s on the same page and run
    cleanly and with their whole view (page, URL, every widget), the photo asked for again, and r1's
    never notice."""
    import classroom
    from local import Cluster
    from stclient import free_ports

    args = classroom.parser().parse_args(["--scenario", "upload", "--students", "6", "--think", "0.8", "1.5",
                                          "--stagger", "1", "--timeout", "90", "--max-seconds", "150"])
    port, *replicas = free_ports(3)
    with Cluster(2, port=port, replica_ports=replicas) as c:
        kill = classroom.Kill("r0", 8.0, lambda: c.kill(0))  # mid-lesson: the students have picked a patch
        s = asyncio.run(classroom.measure(c.url, c.pids(), args, label="test", kill=kill))
        log = c.access_log()
    print(classroom.table(s))
    f = s["failover"]
    # least connections: the load spreads (students arriving at the same moment may tie and land together)
    assert s["sessions_per_replica"].keys() == {"r0", "r1"} and min(s["sessions_per_replica"].values()) >= 2
    assert s["affinity_breaks"] == [] and s["sessions_on_two_replicas"] == 0
    assert s["uploads_shown"] == [True] * 6 and s["pinned_requests"]["upload"] == 6 and s["pinned_requests"]["media"] > 0
    n = f["sessions_on_killed"]
    assert n == s["sessions_per_replica"]["r0"] and f["recovered"] == n and f["lost"] == 0 and f["moved_to"] == ["r1"]
    assert f["recovered_in_5s"] == n and f["page_kept"] == n
    assert set(f["url_view"]) >= {"lang", "model", "image", "layer", "head"}  # the view was in the URL...
    assert f["query_lost"] == [] and f["widgets_lost"] == [] and f["view_kept"] == n  # ... and came back whole
    assert f["photos"] == {"offered": n}  # the uploader again, with a sentence saying why
    assert f["others_errors"] == 0 and f["others_disconnected"] == 0
    assert s["errors"] == [] and s["hung"] == 0 and s["unfinished"] == 0
    assert any("PUT /_stcore/upload_file/" in line and "served=r1" in line for line in log)


DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
NOT_IN_IMAGE = {".ci", ".dockerignore", ".gitignore", "README.md", "docs", "models", "pyproject.toml",
                "requirements-dev.txt", "tests", "benchmarks", "deploy"}  # of the last two, the image takes two files


def image_copies() -> list[tuple[str, str]]:
    """(source, destination) of every COPY in deploy/Dockerfile, relative to the repository / WORKDIR."""
    pairs = []
    for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.M):
        *sources, dst = line.split()
        pairs += [(src, f"{dst}/{Path(src).name}" if dst.endswith("/") or len(sources) > 1 else dst) for src in sources]
    return pairs


def test_the_image_takes_every_file_the_app_runs_from():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    top = {path.split("/")[0] for path in tracked}
    copied = {src.split("/")[0] for src, _ in image_copies()}
    assert top - NOT_IN_IMAGE == copied - {"benchmarks", "deploy"}, "a new top-level file: COPY it or list it here"
    # the torch line installs the pinned version
    pin = re.search(r"^torch==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    sed = re.search(r"\$\(sed -n '([^']+)' requirements.txt\)", DOCKERFILE).group(1)
    out = subprocess.run(["sed", "-n", sed, "requirements.txt"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == pin


@pytest.mark.slow
def test_the_image_files_serve_every_page(tmp_path):
    """What the Dockerfile copies, and nothing else, serves every page in both languages (deploy/warm.py)."""
    import classroom
    from stclient import free_ports
    from warm import warm

    app = tmp_path / "app"
    for src, dst in image_copies():
        if src == "requirements.txt":
            continue
        target = app / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (ROOT / src).is_dir() else shutil.copy)(ROOT / src, target)
    env = {"HF_HOME": str(tmp_path / "hf"), "VIT_EXPLORER_MODELS": str(tmp_path / "models"), "OMP_NUM_THREADS": "1"}
    server = classroom.Server(app, free_ports(1)[0], env=env)
    try:
        errors = asyncio.run(warm(server.url))
    finally:
        server.stop()
    assert errors == []
