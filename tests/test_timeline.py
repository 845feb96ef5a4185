"""The timeline picture of `hjcag predict --plot`: what each panel draws is what the rows say."""

from __future__ import annotations

import matplotlib.colors
import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import Rectangle

from hjcag.predict.timeline import BAR, GATE_COLOURS, label_colours, timeline_figure

GATES = {0: {"text": 1.0, "audio": 0.0, "visual": 0.0}, 1: {"text": 0.5, "audio": 0.3, "visual": 0.2}}


def rows() -> list[dict]:
    """Two dialogues of 2 and 4 turns, given out of turn order."""
    out = []
    for dialogue, n in (("long", 4), ("short", 2)):
        for turn in reversed(range(n)):
            label = ("joy", "anger")[turn % 2]
            p = 0.4 + 0.1 * turn
            out.append({"utterance_id": f"{dialogue}{turn}", "dialogue": dialogue, "turn": turn,
                        "speaker": "AB"[turn % 2], "label": label, "probability": p,
                        "probabilities": {"joy": 0.0, "anger": 0.0, label: p},
                        "gate": GATES[turn % 2]})
    return out


def test_each_turn_is_a_bar_of_its_emotion_as_high_as_its_probability_over_a_strip_of_its_gate() -> None:
    fig = timeline_figure(rows())
    colours = label_colours(rows())
    try:
        axes = fig.axes
        assert [ax.get_title(loc="left") for ax in axes] == ["dialogue long", "dialogue short"]
        for ax, n in zip(axes, (4, 2), strict=True):
            assert ax.get_xlim() == (-0.5, 3.5)  # every panel on the longest dialogue's scale
            [bars] = ax.containers
            assert [b.get_height() for b in bars] == pytest.approx([0.4 + 0.1 * t for t in range(n)])
            assert [matplotlib.colors.to_hex(b.get_facecolor()) for b in bars] == [
                colours[("joy", "anger")[t % 2]] for t in range(n)]
            strips = [r for r in ax.patches if isinstance(r, Rectangle) and r.get_y() < 0]
            assert len(strips) == 3 * n
            for t in range(n):
                turn_strips = strips[3 * t:3 * t + 3]  # drawn turn by turn, text / audio / visual
                assert turn_strips[0].get_x() == pytest.approx(t - BAR / 2)
                assert [r.get_width() for r in turn_strips] == pytest.approx([BAR * w for w in GATES[t % 2].values()])
                assert [matplotlib.colors.to_hex(r.get_facecolor()) for r in turn_strips] == list(
                    GATE_COLOURS.values())
    finally:
        plt.close(fig)
