"""Moving models and data to and from a leased accelerator whose calls carry at most 64 MiB up
and 8 files of 16 MiB down (training/accelerator.md is the whole runbook).

    python scripts/accelerator.py pack .pretrained/all-mpnet-base-v2 .xfer/parts/teacher --weights int8
    python scripts/accelerator.py pack ../shared/data/train/*.json .xfer/parts/data --xz
    python scripts/accelerator.py unpack /tmp/xfer/teacher /tmp/models/teacher
    python scripts/accelerator.py pack runs/recipe/selector $OUT/selector --weights fp16 --part-mb 15

`pack` writes PREFIX.000, PREFIX.001, ... (each at most --part-mb MB) and PREFIX.json (the parts,
their SHA-256 and the whole's), from one folder's top-level files or from a list of files.
Weights (model.safetensors; a selector.safetensors travels as it is) go as they are, in fp16, or
in int8 with one fp32 scale per 128 values of a row, which halves an fp16 model again; `unpack`
checks every part, reassembles them and turns int8 weights back into fp32. Sub-folders (a run's
trainer/ states) stay behind. `calls` shares the parts out among the upload calls.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import torch
from safetensors.torch import load, save

from dynamic_tinybert.cli import check_output_file, exit_status
from dynamic_tinybert.options import UsageError

QUANTIZED = "int8-groups"  # the metadata mark of a file whose 2-D weights are int8
SCALE = ".__scale__"  # suffix of the fp32 scales of each int8 weight
# values of a row that share one scale: on all-mpnet-base-v2 the last hidden states are 2.1% off
# (relative norm; cosine 0.9998) against 4.7% with one scale per row, for 3% more bytes
GROUP = 128


class TransferError(UsageError):
    """Parts missing, corrupted or not matching their manifest; a path or a size that cannot work."""


def _groups(tensor: torch.Tensor) -> torch.Tensor:
    """(rows, groups, GROUP) view of a weight: each row cut into groups of GROUP values where the
    row divides evenly, else the whole row as one group."""
    width = tensor[0].numel()
    return tensor.reshape(tensor.shape[0], -1, GROUP if width % GROUP == 0 else width)


def quantize(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating-point tensors of 2 or more dimensions -> int8 and one fp32 scale per GROUP values
    of a row; the rest kept."""
    out = {}
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.dim() >= 2:
            groups = _groups(tensor.float())
            scale = (groups.abs().amax(dim=2, keepdim=True) / 127).clamp_min(1e-12)
            out[name] = (groups / scale).round().clamp(-127, 127).to(torch.int8).reshape(tensor.shape)
            out[name + SCALE] = scale[..., 0]
        else:
            out[name] = tensor
    return out


def dequantize(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `quantize`, to fp32."""
    out = {}
    for name, tensor in tensors.items():
        if name.endswith(SCALE):
            continue
        scale = tensors.get(name + SCALE)
        if scale is None:
            out[name] = tensor
        else:
            values = tensor.float().reshape(tensor.shape[0], scale.shape[1], -1) * scale[..., None]
            out[name] = values.reshape(tensor.shape).contiguous()
    return out


def _metadata(data: bytes) -> dict:
    """A safetensors file's metadata, read from its header."""
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return dict(header.get("__metadata__") or {})


def _weights(path: Path, mode: str) -> bytes:
    """A safetensors file's bytes for the trip: as is, fp16 or int8."""
    data = path.read_bytes()
    if mode == "keep":
        return data
    tensors, metadata = load(data), _metadata(data)
    if mode == "fp16":
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    else:
        tensors, metadata = quantize(tensors), metadata | {"transfer": QUANTIZED}
    return save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata or None)


def _restore(data: bytes) -> bytes:
    """A safetensors file's bytes back from the trip: int8 weights become fp32."""
    metadata = _metadata(data)
    if metadata.pop("transfer", None) != QUANTIZED:
        return data
    return save(dequantize(load(data)), metadata=metadata or None)


def pack(sources: list[Path], prefix: Path, weights: str, xz: bool, part_mb: float) -> list[Path]:
    """The sources (one folder's top-level files, or files) as parts of at most part_mb MB."""
    files = sorted(p for p in sources[0].iterdir() if p.is_file()) if sources[0].is_dir() else sources
    if len(sources) > 1 and any(p.is_dir() for p in sources):
        raise TransferError("pack one folder, or a list of files")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz" if xz else "w") as tar:
        for path in files:
            data = _weights(path, weights) if path.name == "model.safetensors" else path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    whole = buffer.getvalue()
    size = int(part_mb * 1_000_000)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, start in enumerate(range(0, len(whole), size)):
        part = prefix.with_name(f"{prefix.name}.{i:03d}")
        part.write_bytes(whole[start : start + size])
        parts.append(part)
    manifest = {
        "parts": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in parts},
        "sha256": hashlib.sha256(whole).hexdigest(),
        "files": [p.name for p in files],
    }
    prefix.with_name(prefix.name + ".json").write_text(json.dumps(manifest, indent=1) + "\n")
    return parts


def unpack(prefix: Path, dest: Path) -> list[Path]:
    """Check and reassemble the parts of `prefix` into the folder `dest`; returns its files."""
    manifest_file = prefix.with_name(prefix.name + ".json")
    if not manifest_file.is_file():
        raise TransferError(f"no manifest {manifest_file}: was `pack` run with this prefix?")
    manifest = read_manifest(manifest_file)
    if dest.exists() and not dest.is_dir():
        raise TransferError(f"{dest} is a file; give the folder the files go in")
    chunks = []
    for name, digest in manifest["parts"].items():
        part = prefix.with_name(name)
        if not part.is_file():
            raise TransferError(f"part {part} is missing; it travels in another call, or was not sent")
        data = part.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise TransferError(f"part {part} is corrupted (its SHA-256 does not match {manifest_file})")
        chunks.append(data)
    whole = b"".join(chunks)
    if hashlib.sha256(whole).hexdigest() != manifest["sha256"]:
        raise TransferError(f"the parts of {prefix} do not make the whole the manifest names")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(fileobj=io.BytesIO(whole), mode="r:*") as tar:
        for member in tar.getmembers():
            if not member.isfile() or Path(member.name).name != member.name:
                raise TransferError(f"unexpected member {member.name!r} in {prefix}")
            data = tar.extractfile(member).read()
            if member.name.endswith(".safetensors"):
                data = _restore(data)
            (dest / member.name).write_bytes(data)
            written.append(dest / member.name)
    return written


def read_manifest(path: Path) -> dict:
    """PREFIX.json as `pack` wrote it: the parts' SHA-256 by name, and the whole's."""
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise TransferError(f"manifest {path} is not valid JSON ({error}); send it again") from None
    parts, whole = (manifest.get(k) if isinstance(manifest, dict) else None for k in ("parts", "sha256"))
    if not isinstance(parts, dict) or not isinstance(whole, str):
        raise TransferError(f"{path} is not a manifest that `pack` wrote (no parts and sha256)")
    return manifest


def tree_bytes(repo: Path) -> int:
    """What every call sends anyway: the tracked files and the untracked ones git does not ignore."""
    command = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    done = subprocess.run(command, cwd=repo if repo.is_dir() else None, capture_output=True)
    if not repo.is_dir() or done.returncode != 0:
        raise TransferError(
            f"--repo {repo} is not a git checkout; give the one every call sends, or --reserve-mb"
        )
    listed = done.stdout.split(b"\0")
    paths = [repo / os.fsdecode(name) for name in listed if name]
    return sum(path.stat().st_size for path in paths if path.is_file())


def distribute(files: list[Path], calls: Path, limit_mb: float, reserved: int) -> list[list[Path]]:
    """The files, in order, moved into calls/c1, calls/c2, ...: each call's folder holds what fits
    beside the `reserved` bytes every call sends anyway."""
    room = int(limit_mb * 2**20) - reserved
    if room <= 0:
        raise TransferError(
            f"what every call sends anyway ({reserved / 2**20:.1f} MiB) fills a call of {limit_mb:g} MiB"
        )
    for path in files:
        if not path.is_file():
            raise TransferError(f"{path} is not a file: `calls` moves files (pack a folder into parts first)")
    groups: list[list[Path]] = [[]]
    used = 0
    for path in files:
        size = path.stat().st_size
        if size > room:
            raise TransferError(
                f"{path} ({size / 1e6:.1f} MB) is larger than one call carries; pack it in parts"
            )
        if used + size > room:
            groups.append([])
            used = 0
        groups[-1].append(path)
        used += size
    for i, group in enumerate(groups, 1):
        folder = calls / f"c{i}"
        folder.mkdir(parents=True, exist_ok=True)
        for path in group:
            shutil.move(str(path), folder / path.name)
    return groups


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="a folder or files -> PREFIX.NNN parts and PREFIX.json")
    p.add_argument("sources", nargs="+", type=Path, help="one folder, or files")
    p.add_argument("prefix", type=Path, help="where the parts go, e.g. .xfer/parts/teacher")
    p.add_argument("--weights", choices=("keep", "fp16", "int8"), default="keep")
    p.add_argument("--xz", action="store_true", help="compress (text; int8 weights barely shrink)")
    p.add_argument("--part-mb", type=float, default=10.0, help="largest part, in MB (default 10)")
    u = sub.add_parser("unpack", help="PREFIX.NNN parts -> a folder")
    u.add_argument("prefix", type=Path)
    u.add_argument("dest", type=Path)
    c = sub.add_parser("calls", help="files -> CALLS/c1, CALLS/c2, ...: what each upload call carries")
    c.add_argument("calls", type=Path, help="the folder the calls' folders go in, e.g. .xfer")
    c.add_argument("files", nargs="+", type=Path, help="in the order they should travel")
    c.add_argument("--limit-mb", type=float, default=64.0, help="MiB one call carries (default 64)")
    c.add_argument("--repo", type=Path, default=Path("."), help="the checkout every call sends")
    c.add_argument("--reserve-mb", type=float, help="MiB each call sends anyway (default: --repo's size)")
    return parser


def check_sizes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Sizes that leave room: a part of at least a byte, a call that carries something."""
    if args.command == "pack" and not 1e-6 <= args.part_mb < math.inf:
        parser.error(f"--part-mb must be above 0 (a part holds at least a byte), got {args.part_mb:g}")
    if args.command == "calls" and not 0 < args.limit_mb < math.inf:
        parser.error(f"--limit-mb must be above 0, got {args.limit_mb:g}")
    if args.command == "calls" and args.reserve_mb is not None and not 0 <= args.reserve_mb < math.inf:
        parser.error(f"--reserve-mb must be 0 or more, got {args.reserve_mb:g}")


def run_pack(args: argparse.Namespace) -> None:
    for source in args.sources:
        if not source.exists():
            raise TransferError(f"{source} does not exist")
    if args.prefix.is_dir():  # the parts would be written beside it, named after it
        raise TransferError(
            f"prefix {args.prefix} is a folder; the parts are named after the prefix: give one in it, "
            f"e.g. {args.prefix / 'parts'}"
        )
    check_output_file(args.prefix.with_name(args.prefix.name + ".json"), "prefix", make_folders=True)
    parts = pack(args.sources, args.prefix, args.weights, args.xz, args.part_mb)
    total = sum(p.stat().st_size for p in parts)
    print(f"{args.prefix}: {len(parts)} parts, {total / 1e6:.1f} MB")


def run_calls(args: argparse.Namespace) -> None:
    if args.calls.exists() and not args.calls.is_dir():
        raise TransferError(f"{args.calls} is a file; give the folder the calls' folders go in")
    if args.reserve_mb is not None:
        reserved = int(args.reserve_mb * 2**20)
    else:
        reserved = tree_bytes(args.repo) + 2**20  # and a MiB for the call's own bookkeeping
    groups = distribute(args.files, args.calls, args.limit_mb, reserved)
    for i, group in enumerate(groups, 1):
        size = sum((args.calls / f"c{i}" / p.name).stat().st_size for p in group)
        print(f"c{i}: {len(group)} files, {size / 1e6:.1f} MB (+{reserved / 1e6:.1f} MB of checkout)")


def run_unpack(args: argparse.Namespace) -> None:
    files = unpack(args.prefix, args.dest)
    print(f"{args.dest}: {', '.join(f.name for f in files)}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_sizes(parser, args)
    run = {"pack": run_pack, "unpack": run_unpack, "calls": run_calls}[args.command]
    return exit_status(parser.prog, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
