"""Netfilter for the iptables resource types: the table model, iptables-save parsing,
canonical rule rendering, block placement, restore transactions and name resolution.

Nothing here runs a process except through :class:`~statekit.host.host.Host` ``run``.
"""
