"""Implementations of the contract: ``inline/<api>/<name>`` run in-process, ``remote/<api>/<name>`` adapt
other services. Each is declared by a ``ProviderSpec`` in its API package (``inline/<api>/__init__.py``)
and listed in the ``underlay.providers`` entry points of ``pyproject.toml``, the same path a third-party
provider takes (see :mod:`underlay.core.registry`)."""
