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


def test_common_emotion_names_keep_their_colours_and_every_label_has_its_own() -> None:
    labels = ["neutral", "Anger", "sadness", "joy", "peaceful", "contempt", "boredom", "awe"]
    row = {"probabilities": dict.fromkeys(labels, 0.1)}
    colours = label_colours([row])
    assert (colours["Anger"], colours["sadness"], colours["joy"]) == ("#d62728", "#1f77b4", "#f2b701")
    assert len(set(colours.values())) == len(labels)  # the spare colours skip the one peaceful took
    assert not set(colours.values()) & set(GATE_COLOURS.values())


def test_the_note_on_dialogues_left_out_does_not_cover_the_legend() -> None:
    many = [{"utterance_id": f"u{d}", "dialogue": f"d{d}", "turn": 0, "speaker": "A", "label": "joy",
             "probability": 0.9, "probabilities": {"joy": 0.9, "anger": 0.1}, "gate": GATES[1]} for d in range(30)]
    fig = timeline_figure(many)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        [legend] = fig.legends
        notes = [t for t in fig.texts if "the first 24 of 30 dialogues" in t.get_text()]
        assert len(notes) == 1
        assert not legend.get_window_extent(renderer).overlaps(notes[0].get_window_extent(renderer))
        for ax in fig.axes:
            assert not ax.get_tightbbox(renderer).overlaps(notes[0].get_window_extent(renderer))
    finally:
        plt.close(fig)
