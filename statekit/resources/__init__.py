"""The registry of resource types: one readable dict, imported lazily by name."""

from __future__ import annotations

from statekit.resources.base import Resource

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: type name -> "module:Class" under statekit.resources (imported on first use).
REGISTRY: dict[str, str] = {
    "env_file": "env_file:EnvFile",
    "signal": "signal:Signal",
    "command": "command:Command",
    "iptables_rule": "iptables_rule:IptablesRule",
    "iptables_chain": "iptables_chain:IptablesChain",
    "coredns_zone": "coredns_zone:CorednsZone",
}

_loaded: dict[str, Resource[Any, Any]] = {}


def known_types() -> list[str]:
    return sorted(REGISTRY)


def get(type_name: str) -> Resource[Any, Any]:
    """The resource object for ``type_name``; KeyError if unknown."""
    if type_name not in _loaded:
        module_name, class_name = REGISTRY[type_name].split(":")
        # __import__, not importlib.import_module: importlib and warnings stay unimported
        module = __import__(f"statekit.resources.{module_name}", fromlist=[class_name])
        _loaded[type_name] = getattr(module, class_name)()
    return _loaded[type_name]
