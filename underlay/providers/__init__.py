"""Implementations of the contract: ``inline/<api>/<name>`` run in-process, ``remote/<api>/<name>`` adapt
other services, and ``<api>/<backend>/`` holds a backend whose code serves several provider types (Qdrant's
local mode and server, for instance). Each type is declared by a ``ProviderSpec`` in its API or backend
package's ``__init__`` and listed in the ``underlay.providers`` entry points of ``pyproject.toml``, the
same path a third-party provider takes (see :mod:`underlay.core.registry`)."""
