"""Write the fingerprints of SQuAD 1.1 dev that training and the search refuse data by: the
sorted 8-byte digests of its question ids (data.id_digest) and of its paragraphs, case and white
space aside (data.context_digest); no text of the dataset.

    python scripts/squad_dev_fingerprint.py --dev ../shared/data/squad/dev-v1.1.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynamic_tinybert.cli import check_output_file, exit_status
from dynamic_tinybert.data import DEV_CONTEXTS, DEV_FINGERPRINT, context_digest, id_digest, read_squad
from dynamic_tinybert.files import atomic_write
from dynamic_tinybert.options import UsageError

DEV_QUESTIONS = 10_570  # SQuAD 1.1 dev's questions (2,067 paragraphs)


def fingerprint(args: argparse.Namespace) -> None:
    if args.out.resolve() == args.contexts_out.resolve():
        raise UsageError(f"--out and --contexts-out are both {args.out}; give each a file of its own")
    for path, option, default in (
        (args.out, "--out", DEV_FINGERPRINT),
        (args.contexts_out, "--contexts-out", DEV_CONTEXTS),
    ):
        check_output_file(path, option, example=default.name, inputs={"--dev": args.dev}, make_folders=True)
    examples = read_squad(args.dev)
    if len(examples) != DEV_QUESTIONS:  # another file's fingerprints would let dev itself through
        raise UsageError(
            f"--dev {args.dev} holds {len(examples)} questions, not SQuAD 1.1 dev's {DEV_QUESTIONS:,}; "
            "give dev-v1.1.json"
        )
    for path, digests, what in (
        (args.out, {id_digest(e.id) for e in examples}, "question ids"),
        (args.contexts_out, {context_digest(e.context) for e in examples}, "paragraphs"),
    ):
        content = b"".join(sorted(digests))
        atomic_write(path, lambda staging, content=content: staging.write_bytes(content))
        print(f"{path}: {len(digests)} {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dev", type=Path, required=True, help="SQuAD 1.1 dev-v1.1.json")
    parser.add_argument("--out", type=Path, default=DEV_FINGERPRINT, help="the question ids' digests")
    parser.add_argument("--contexts-out", type=Path, default=DEV_CONTEXTS, help="the paragraphs' digests")
    args = parser.parse_args(argv)
    return exit_status(parser.prog, lambda: fingerprint(args))


if __name__ == "__main__":
    sys.exit(main())
