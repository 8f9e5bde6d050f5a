"""Housekeeping over labelled Docker objects: list and prune what contextrl left behind."""

from __future__ import annotations

from dataclasses import dataclass

from contextrl.sandboxes.dockerclient import LABEL, LABEL_KIND, LABEL_RUN, docker_client


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    status: str
    run: str
    image: str


def list_containers(run: str | None = None) -> list[ContainerInfo]:
    api = docker_client()
    filters = {"label": [f"{LABEL}=1"] + ([f"{LABEL_RUN}={run}"] if run else [])}
    out = []
    for c in api.containers(all=True, filters=filters):
        out.append(ContainerInfo(c["Id"][:12], (c.get("Names") or ["?"])[0].lstrip("/"), c.get("Status", ""),
                                 c.get("Labels", {}).get(LABEL_RUN, ""), c.get("Image", "")[:40]))
    return out


def prune(run: str | None = None, images: bool = True) -> tuple[int, int]:
    """Remove labelled containers (of one run, or all) and snapshot images. Returns counts."""
    api = docker_client()
    n_c = 0
    for c in list_containers(run):
        try:
            api.remove_container(c.id, force=True, v=True)
            n_c += 1
        except Exception:  # noqa: BLE001 - already gone
            pass
    n_i = 0
    if images:
        filters = {"label": [f"{LABEL_KIND}=snapshot"] + ([f"{LABEL_RUN}={run}"] if run else [])}
        for img in api.images(filters=filters):
            try:
                api.remove_image(img["Id"], force=True)
                n_i += 1
            except Exception:  # noqa: BLE001 - in use by a container of another run
                pass
    return n_c, n_i
