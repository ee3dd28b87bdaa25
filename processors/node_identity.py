"""Node names of resources, and the owner of each name.

A node's name is the ``nodename`` label of ``node_uname_info`` from the same
resource. Before that series is seen the name falls back to the resource
attributes ``host.name``, then ``k8s.node.name``, then the host part of the
instance (``service.instance.id`` without its port), then
``server.address`` and ``net.host.name``.

Two resources that report the same name are a conflict: the resource that
claimed the name first keeps it until it is forgotten, and the other
resource's snapshots are dropped (and counted), never merged.
"""

from __future__ import annotations

FALLBACK_ATTRIBUTES = ("host.name", "k8s.node.name")
ADDRESS_ATTRIBUTES = ("server.address", "net.host.name")


def instance_host(instance: str) -> str:
    """Return the host part of an instance: "10.0.0.1:9100" → "10.0.0.1", "[::1]:9100" → "::1"."""
    if instance.startswith("["):
        end = instance.find("]")
        return instance[1:end] if end > 0 else instance
    if instance.count(":") == 1:
        return instance.partition(":")[0]
    return instance


def fallback_name(resource_attrs: dict[str, str]) -> str:
    """Return the node name the resource attributes suggest, or ""."""
    for name in FALLBACK_ATTRIBUTES:
        value = resource_attrs.get(name)
        if value:
            return value
    instance = resource_attrs.get("service.instance.id")
    if instance:
        host = instance_host(instance)
        if host:
            return host
    for name in ADDRESS_ATTRIBUTES:
        value = resource_attrs.get(name)
        if value:
            return value
    return ""


class NodeNames:
    """Node name → the resource (by its key) that owns it."""

    def __init__(self) -> None:
        self._owners: dict[str, tuple] = {}

    def claim(self, name: str, resource_key: tuple) -> bool:
        """Give ``name`` to the resource unless another resource owns it."""
        owner = self._owners.get(name)
        if owner is None:
            self._owners[name] = resource_key
            return True
        return owner == resource_key

    def owner(self, name: str) -> tuple | None:
        return self._owners.get(name)

    def release(self, name: str, resource_key: tuple) -> None:
        if self._owners.get(name) == resource_key:
            del self._owners[name]

    def __len__(self) -> int:
        return len(self._owners)
