"""Write the fingerprint of SQuAD 1.1 dev that training and the search refuse data by: the sorted
8-byte digests of its question ids (data.id_digest), no text of the dataset.

    python scripts/squad_dev_fingerprint.py --dev ../shared/data/squad/dev-v1.1.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dynamic_tinybert.data import DEV_FINGERPRINT, id_digest, read_squad


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dev", type=Path, required=True, help="SQuAD 1.1 dev-v1.1.json")
    parser.add_argument("--out", type=Path, default=DEV_FINGERPRINT)
    args = parser.parse_args()
    digests = sorted({id_digest(e.id) for e in read_squad(args.dev)})
    args.out.write_bytes(b"".join(digests))
    print(f"{args.out}: {len(digests)} question ids")


if __name__ == "__main__":
    main()
