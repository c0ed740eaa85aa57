"""Implementations of the contract: ``inline/<api>/<name>`` run in-process, ``remote/<api>/<name>`` adapt
other services. Each is declared by a ``ProviderSpec`` in :mod:`underlay.providers.registry`."""
