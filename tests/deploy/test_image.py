"""The microshop image: small, FROM scratch (no shell, no package manager, no compiler), run
as uid/gid 10001 with the binary as its entry point and `microshop probe` as its health
check."""
import io
import json
import subprocess
import tarfile

from conftest import docker

IMAGE = "microshop:latest"
LIMIT = 25 * 1000 * 1000  # bytes, as `docker image inspect -f {{.Size}}` counts them


def test_the_image_is_at_most_25_mb(record_property):
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
    record_property("image_bytes", size)
    assert size <= LIMIT, f"{IMAGE} is {size} bytes"


def test_the_image_has_no_shell_and_runs_as_10001():
    cfg = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", IMAGE).stdout)
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["/usr/local/bin/microshop"]
    assert cfg["Healthcheck"]["Test"][:3] == ["CMD", "/usr/local/bin/microshop", "probe"]
    cid = docker("create", IMAGE).stdout.strip()
    try:
        tar = subprocess.run(["docker", "export", cid], capture_output=True, check=True,
                             timeout=120).stdout
    finally:
        docker("rm", cid)
    names = {m.name.lstrip("./"): m for m in tarfile.open(fileobj=io.BytesIO(tar))}
    assert "usr/local/bin/microshop" in names
    for path in ("bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/bash", "bin/busybox",
                 "usr/bin/apt-get", "usr/bin/dpkg", "usr/bin/gcc", "usr/bin/curl"):
        assert path not in names, path
    # the libraries the binary dlopen()s at run time are there
    libs = [n for n in names if "/lib" in n]
    assert any(n.endswith("/libpq.so.5") for n in libs), libs
    assert any(n.endswith("/libnats.so.3.4") for n in libs), libs
    assert names["data"].uid == 10001 and names["data"].gid == 10001


def test_the_binary_runs_in_the_image():
    r = docker("run", "--rm", IMAGE, "version")
    assert r.stdout.startswith("microshop ")
    r = docker("run", "--rm", "--entrypoint", "/bin/sh", IMAGE, "-c", "true", check=False)
    assert r.returncode != 0
