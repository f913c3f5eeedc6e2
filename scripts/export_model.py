"""Write a trained model folder for shipping: fp16 safetensors, tokenizer files, and its frontier
if it has one (not the training state, logs or search state).

    python scripts/export_model.py --model runs/student --out dynamic_tinybert/default_model

The model loads back in fp32 (transformers and `dynamic-tinybert` alike); fp16 halves the file
and moves logits by about 1e-3.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dynamic_tinybert import checkpoint
from dynamic_tinybert.cli import exit_status
from dynamic_tinybert.frontier import FILENAME, Frontier
from dynamic_tinybert.options import UsageError, check_output_folder


def export(args: argparse.Namespace) -> None:
    check_output_folder(args.out, "--out")
    model, tokenizer, folder = checkpoint.load(args.model, require_qa_head=True)
    if args.out.resolve() == folder.resolve():
        raise UsageError(
            f"--out {args.out} is the --model folder, whose weights the export would replace; "
            "give another folder"
        )
    Frontier.load(folder)  # a corrupt frontier.json is refused here, not shipped
    extra = {FILENAME: (folder / FILENAME).read_bytes()} if (folder / FILENAME).is_file() else {}
    out = checkpoint.save(model, tokenizer, args.out, dtype=getattr(torch, args.dtype), extra_files=extra)
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"{out}: {size:.1f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    args = parser.parse_args(argv)
    return exit_status(parser.prog, lambda: export(args))


if __name__ == "__main__":
    sys.exit(main())
