"""Vector-io backends laid out by backend: ``vector_io/<backend>/`` holds one backend's logic and both
its ``inline::`` and ``remote::`` providers, declared by the specs in its ``__init__``.

Why by backend: an embedded mode and a server mode of the same database share nearly all their code
(collections, filters pushed down, the keyword sidecar), so they live together rather than as a
helper in ``providers/utils`` with a shim under ``inline/`` and another under ``remote/``. The other
backends still use the older ``inline/vector_io`` and ``remote/vector_io`` layout and move here one
at a time.
"""
