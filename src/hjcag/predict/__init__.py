"""`hjcag predict`: conversations from a manifest or a features file, answered turn by turn by an endpoint or a
model in process (:mod:`hjcag.client`), written as one row per utterance, pictured as a per-turn timeline.

    inputs (manifest / .npz -> dialogues of turns) -> run (parallel dialogues, resumable) -> rows (JSONL + CSV,
    the terminal table) -> timeline (PNG + HTML)
"""
