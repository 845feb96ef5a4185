"""MELD text-only on the real transcripts, through the project's own stages (the `hjcag` CLI).

    python benchmarks/real_meld_text.py /data/MELD                    # the three *_sent_emo.csv files are enough
    python benchmarks/real_meld_text.py /data/MELD --work runs/real_meld --threads 2 --finetune

`benchmarks/real_text.py` on MELD's folder, with its options (recipes, context, seeds, fine-tuning, tuning; see its
docstring), under the name its results files have had since the README's "Real data" tables were first built from
them (``benchmark: real_meld_text``).
"""

from __future__ import annotations

import sys

import real_text

if __name__ == "__main__":
    sys.exit(real_text.main("real_meld_text", meld_only=True, description=__doc__.splitlines()[0]))
