"""The default sandbox image: Debian bookworm with Python 3, git and pytest, user `agent`.

Two recipes that give the same image, tagged by a content hash of the recipe so a
rebuild happens only when the recipe changes:
- `dockerfile`: a normal `docker build` (the default on a machine that can pull);
- `debootstrap`: offline-capable; a minbase rootfs from the host's configured apt
  mirror, `docker import`ed. Used where no image registry is reachable (CI here).
`auto` takes the Dockerfile when its base image is already local, else debootstrap when
it is installed and we are root, else the Dockerfile (which pulls).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Literal

from contextrl.errors import SandboxError
from contextrl.sandboxes.dockerclient import LABEL, LABEL_KIND, docker_client

BuildMethod = Literal["auto", "dockerfile", "debootstrap"]
SUITE = "bookworm"
PACKAGES = ("python3", "python3-pytest", "git", "procps", "ca-certificates")
BASE_IMAGE = "debian:bookworm-slim"
REPO = "contextrl/sandbox"
RECIPE_VERSION = "1"

DOCKERFILE = f"""FROM {BASE_IMAGE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {' '.join(PACKAGES)} \\
    && rm -rf /var/lib/apt/lists/*
RUN groupadd -g 1000 agent && useradd -m -u 1000 -g 1000 -s /bin/bash agent \\
    && mkdir -p /workspace && chown agent:agent /workspace
RUN git config --system user.email agent@contextrl.invalid && git config --system user.name agent \\
    && git config --system init.defaultBranch main && git config --system --add safe.directory '*'
WORKDIR /workspace
LABEL {LABEL}=1 {LABEL_KIND}=base
CMD ["sleep", "infinity"]
"""


def recipe_hash() -> str:
    return hashlib.sha256((RECIPE_VERSION + SUITE + " ".join(PACKAGES) + DOCKERFILE).encode()).hexdigest()[:12]


def default_image_tag() -> str:
    return os.environ.get("CONTEXTRL_SANDBOX_IMAGE") or f"{REPO}:{recipe_hash()}"


def image_exists(tag: str) -> bool:
    api = docker_client()
    try:
        api.inspect_image(tag)
        return True
    except Exception:  # noqa: BLE001
        return False


_ensured: str | None = None


def ensure_default_image(method: BuildMethod = "auto", progress: bool = True) -> str:
    """Return the default image tag, building it first if the engine lacks it."""
    global _ensured
    tag = default_image_tag()
    if _ensured == tag:
        return tag
    if not image_exists(tag):
        if os.environ.get("CONTEXTRL_SANDBOX_IMAGE"):
            raise SandboxError(f"CONTEXTRL_SANDBOX_IMAGE={tag!r} is not in the Docker engine; build or pull it, or unset the variable")
        build_image(method, progress=progress)
    _ensured = tag
    return tag


def choose_method(method: BuildMethod) -> Literal["dockerfile", "debootstrap"]:
    if method != "auto":
        return method
    if image_exists(BASE_IMAGE):
        return "dockerfile"
    if shutil.which("debootstrap") and os.geteuid() == 0:
        return "debootstrap"
    return "dockerfile"


def build_image(method: BuildMethod = "auto", progress: bool = True, force: bool = False) -> str:
    """Build the default image; returns its tag. Raises SandboxError saying what failed."""
    tag = default_image_tag()
    if not force and image_exists(tag):
        return tag
    how = choose_method(method)
    t0 = time.time()
    _say(progress, f"building sandbox image {tag} via {how} (one-off; cached by recipe hash)")
    if how == "dockerfile":
        _build_dockerfile(tag, progress)
    else:
        _build_debootstrap(tag, progress)
    _say(progress, f"built {tag} in {time.time() - t0:.0f}s")
    return tag


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[contextrl] {msg}", flush=True)


def _build_dockerfile(tag: str, progress: bool) -> None:
    api = docker_client(timeout=1800)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = DOCKERFILE.encode()
        ti = tarfile.TarInfo("Dockerfile")
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    last_err = None
    for chunk in api.build(fileobj=buf, custom_context=True, tag=tag, rm=True, decode=True, labels={LABEL: "1", LABEL_KIND: "base"}):
        if "stream" in chunk and progress:
            line = chunk["stream"].rstrip()
            if line.startswith("Step "):
                print(f"  {line}", flush=True)
        if "error" in chunk:
            last_err = chunk["error"]
    if last_err or not image_exists(tag):
        raise SandboxError(
            f"docker build of the sandbox image failed: {last_err}. Without access to an image registry, "
            "build offline: `contextrl sandbox build --method debootstrap` (needs root and Debian's debootstrap)."
        )


def apt_mirror() -> str:
    """The host's configured Debian mirror (deb822 or one-line sources), else deb.debian.org."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        m = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, re.M)
        if m and "security" not in m.group(1):
            return m.group(1)
    return "http://deb.debian.org/debian"


def _build_debootstrap(tag: str, progress: bool) -> None:
    if not shutil.which("debootstrap"):
        raise SandboxError("offline image build needs Debian's debootstrap: apt-get install debootstrap")
    if os.geteuid() != 0:
        raise SandboxError("offline image build (debootstrap) must run as root; or build from the Dockerfile with --method dockerfile")
    root = Path(tempfile.mkdtemp(prefix="contextrl-rootfs-"))
    try:
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), apt_mirror()]
        _say(progress, "  " + " ".join(cmd))
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise SandboxError(f"debootstrap failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
        setup = (
            "groupadd -g 1000 agent && useradd -m -u 1000 -g 1000 -s /bin/bash agent && "
            "mkdir -p /workspace && chown agent:agent /workspace && "
            "git config --system user.email agent@contextrl.invalid && git config --system user.name agent && "
            "git config --system init.defaultBranch main && git config --system --add safe.directory '*' && "
            "apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin"
        )
        proc = subprocess.run(["chroot", str(root), "/bin/sh", "-c", setup], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise SandboxError(f"configuring the rootfs failed:\n{proc.stdout[-3000:]}")
        _say(progress, "  importing rootfs into the Docker engine")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        changes = ['WORKDIR /workspace', 'CMD ["sleep", "infinity"]', f'LABEL {LABEL}=1 {LABEL_KIND}=base']
        imp = subprocess.run(
            ["docker", "import", *sum((["--change", c] for c in changes), []), "-", tag],
            stdin=tar.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        tar.wait()
        if imp.returncode != 0:
            raise SandboxError(f"docker import failed: {imp.stderr.strip()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
