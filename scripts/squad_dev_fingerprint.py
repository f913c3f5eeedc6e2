"""Write the fingerprints of SQuAD 1.1 dev that training and the search refuse data by: the
sorted 8-byte digests of its question ids (data.id_digest) and of its paragraphs, case and white
space aside (data.context_digest); no text of the dataset.

    python scripts/squad_dev_fingerprint.py --dev ../shared/data/squad/dev-v1.1.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dynamic_tinybert.data import DEV_CONTEXTS, DEV_FINGERPRINT, context_digest, id_digest, read_squad


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dev", type=Path, required=True, help="SQuAD 1.1 dev-v1.1.json")
    parser.add_argument("--out", type=Path, default=DEV_FINGERPRINT, help="the question ids' digests")
    parser.add_argument("--contexts-out", type=Path, default=DEV_CONTEXTS, help="the paragraphs' digests")
    args = parser.parse_args()
    examples = read_squad(args.dev)
    for path, digests, what in (
        (args.out, {id_digest(e.id) for e in examples}, "question ids"),
        (args.contexts_out, {context_digest(e.context) for e in examples}, "paragraphs"),
    ):
        path.write_bytes(b"".join(sorted(digests)))
        print(f"{path}: {len(digests)} {what}")


if __name__ == "__main__":
    main()
