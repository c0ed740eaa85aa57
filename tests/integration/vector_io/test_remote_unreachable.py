"""Remote vector backends pointed at a port where nothing listens fail at start-up with a 503 naming it.

This is the one check remote::qdrant gets against a real network peer here: no Qdrant server can
run on this machine, so its behaviour with a live server is untested (its store code is shared with
inline::qdrant, which runs the whole contract).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from underlay.api.errors import ServiceUnavailableError


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: nothing listens there


def qdrant(port: int, tmp: Any) -> Any:
    from underlay.providers.vector_io.qdrant import remote as qdrant

    return qdrant, qdrant.Config(url=f"http://127.0.0.1:{port}", timeout=3, keyword_db_path=str(tmp / "kw.db"))


def chromadb(port: int, tmp: Any) -> Any:
    from underlay.providers.vector_io.chromadb import remote as chromadb

    return chromadb, chromadb.Config(url=f"http://127.0.0.1:{port}", keyword_db_path=str(tmp / "kw.db"))


def milvus(port: int, tmp: Any) -> Any:
    from underlay.providers.vector_io.milvus import remote as milvus

    return milvus, milvus.Config(uri=f"http://127.0.0.1:{port}", timeout=3)


def pgvector(port: int, tmp: Any) -> Any:
    from underlay.providers.remote.vector_io import pgvector

    return pgvector, pgvector.Config(host="127.0.0.1", port=port, connect_timeout=3)


@pytest.mark.parametrize("make", [qdrant, chromadb, milvus, pgvector], ids=lambda f: f.__name__)
async def test_unreachable_server_is_503(make: Any, tmp_path: Any) -> None:
    port = closed_port()
    module, config = make(port, tmp_path)
    provider = await module.create_provider("remote-test", config, {})
    with pytest.raises(ServiceUnavailableError) as err:
        await provider.initialize()
    assert "remote-test" in str(err.value) and str(port) in str(err.value)
    await provider.shutdown()
