"""What a Ray cluster is, and what it can become: the node shapes a trial may land on.

A trial's resources must fit on one node. On a fixed cluster the nodes that
are up are all there will be; on a cluster started by `ray up`, GPU workers
scale from zero, so the node types the autoscaler may start count too.

Ray 2.60 has no public API that lists those node types. Two places can hold them:
- a `ClusterConfig` in the GCS, when a cluster manager has published one
  (`ray._private.state.state.get_cluster_config()`; Ray Data reads it the same
  way to learn how far a cluster can grow). Read first, being the most stable
  place, though with the cluster launcher nothing publishes it (checked on
  Ray 2.60's fake autoscaler, v1 and v2);
- the config file that the launcher's autoscaler monitor reads on the head
  node (`monitor.py --autoscaling-config=FILE`; `ray up` passes
  `~/ray_bootstrap_config.yaml`, with every node type's resources filled in).
  A zero-CPU task pinned to the head finds the monitor of this cluster (by its
  GCS port) and reads that file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HEAD_RESOURCE = "node:__internal_head__"  # Ray's marker resource of the head node
MONITOR_SCRIPT = "autoscaler/_private/monitor.py"
SHOWN = ("CPU", "GPU")


@dataclass(frozen=True, kw_only=True)
class NodeShape:
    """One node that is up, or one node type the autoscaler may start."""

    name: str
    resources: Mapping[str, float]
    running: bool

    def hosts(self, request: Mapping[str, float]) -> bool:
        """Whether one trial asking for `request` fits on an empty node of this shape."""
        return all(self.resources.get(key, 0) >= amount for key, amount in request.items() if amount > 0)

    def describe(self) -> str:
        shown = ", ".join(f"{self.resources.get(key, 0):g} {key}" for key in SHOWN)
        return f"{self.name} ({shown})"


def running_nodes() -> list[NodeShape]:
    """The nodes that are up now, with their total resources."""
    import ray

    return [NodeShape(name=f"node {node['NodeManagerAddress']}"
                      + (" (head)" if HEAD_RESOURCE in node["Resources"] else ""),
                      resources=dict(node["Resources"]), running=True)
            for node in ray.nodes() if node["Alive"]]


def node_types_from_config(config: Mapping[str, Any]) -> list[NodeShape]:
    """The worker types of an autoscaling config (`ray up`'s YAML) that may start at all."""
    if not config.get("max_workers", 1):
        return []
    head = config.get("head_node_type")
    return [NodeShape(name=name, resources=dict(node.get("resources", {})), running=False)
            for name, node in config.get("available_node_types", {}).items()
            if name != head and node.get("max_workers", 0) > 0]


def _published_node_types() -> list[NodeShape] | None:
    """The node groups a cluster manager published in the GCS, if any."""
    from ray._private.state import state

    config = state.get_cluster_config()
    if config is None or not config.node_group_configs:
        return None
    return [NodeShape(name=group.name, resources=dict(group.resources), running=False)
            for group in config.node_group_configs if group.max_count != 0]


def monitor_config_on_this_node(gcs_port: str) -> dict[str, Any] | None:
    """The autoscaling config read by this node's autoscaler monitor for the GCS on `gcs_port`.

    Reads /proc (the head of a launcher cluster is Linux); several clusters on
    one machine are told apart by their GCS port.
    """
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            parts = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:  # the process ended, or is not ours to read
            continue
        if not any(part.endswith(MONITOR_SCRIPT) for part in parts):
            continue
        flags = dict(part.split("=", 1) for part in parts if part.startswith("--") and "=" in part)
        path = flags.get("--autoscaling-config")
        if path and flags.get("--gcs-address", "").rpartition(":")[2] == gcs_port:
            return yaml.safe_load(Path(path).expanduser().read_text())
    return None


def _launcher_node_types() -> list[NodeShape] | None:
    """The node types of the v1 autoscaler's config, read on the head node.

    None when there is no such autoscaler or its config cannot be read: the
    check then judges by the nodes that are up, as on a fixed cluster.
    """
    import ray

    port = ray.get_runtime_context().gcs_address.rpartition(":")[2]
    read = ray.remote(num_cpus=0, resources={HEAD_RESOURCE: 0.001}, max_retries=0)(
        monitor_config_on_this_node)
    try:
        config = ray.get(read.remote(port), timeout=120)
    except ray.exceptions.RayError:  # the read failed on the head (a RayTaskError) or timed out
        return None
    return None if config is None else node_types_from_config(config)


def autoscaler_node_types() -> list[NodeShape] | None:
    """The node types the autoscaler may start, or None when no autoscaler is found."""
    published = _published_node_types()
    return published if published is not None else _launcher_node_types()


def cluster_shapes(*, autoscaling: bool) -> tuple[list[NodeShape], bool]:
    """Every shape a trial may land on, and whether an autoscaler's node types are known.

    `autoscaling=False` (a runtime this process started) skips the search for
    an autoscaler: a local runtime has none.
    """
    shapes = running_nodes()
    startable = autoscaler_node_types() if autoscaling else None
    return shapes + (startable or []), startable is not None
