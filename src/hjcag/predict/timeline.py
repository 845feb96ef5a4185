"""The per-turn emotion timeline of `hjcag predict`'s rows: a PNG (matplotlib, Agg) and an HTML page that opens
offline (plain HTML and CSS, nothing fetched). Each dialogue's turns in order: the speaker, the predicted emotion
and its probability, and the gate weights of text / audio / visual as a split bar."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hjcag.predict.rows import GATES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The gate strip in greys, so that no emotion's colour reads as a modality.
GATE_COLOURS = {"text": "#333333", "audio": "#808080", "visual": "#cccccc"}
# The colours people expect of common emotion names (MELD, IEMOCAP, EmoryNLP spell them these ways).
EMOTION_COLOURS = {
    "anger": "#d62728", "angry": "#d62728", "mad": "#d62728",
    "sadness": "#1f77b4", "sad": "#1f77b4",
    "joy": "#f2b701", "joyful": "#f2b701", "happy": "#f2b701", "happiness": "#f2b701",
    "fear": "#9467bd", "fearful": "#9467bd", "scared": "#9467bd",
    "disgust": "#2ca02c", "disgusted": "#2ca02c",
    "surprise": "#ff7f0e", "surprised": "#ff7f0e",
    "neutral": "#c9b79c",
    "frustrated": "#8c564b", "frustration": "#8c564b",
    "excited": "#e377c2",
    "peaceful": "#17becf",
    "powerful": "#bcbd22",
}
# Other labels take these in turn (those a known name of the same set has taken are skipped).
SPARE_COLOURS = ("#17becf", "#e377c2", "#bcbd22", "#8c564b", "#7f3c8d", "#11a579", "#3969ac", "#f97b72",
                 "#e68310", "#008695")
PNG_DIALOGUES = 24  # the picture shows this many dialogues; the page shows them all
BAR = 0.7  # a turn's bar width (turns are 1 apart)


def by_dialogue(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """The rows grouped by dialogue (in first-seen order), each dialogue's turns in order."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["dialogue"]), []).append(row)
    return [(d, sorted(turns, key=lambda r: int(r["turn"]))) for d, turns in groups.items()]


def label_colours(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """A colour per label of the rows: a common emotion name's own (anger red, sadness blue, ...), else a spare one
    no other label of the set has."""
    labels: list[str] = []
    for row in rows:
        labels += [k for k in row["probabilities"] if k not in labels]
    known = {label: EMOTION_COLOURS[label.lower()] for label in labels if label.lower() in EMOTION_COLOURS}
    spare = [c for c in SPARE_COLOURS if c not in known.values()]
    others = [label for label in labels if label not in known]
    return {label: known.get(label) or spare[others.index(label) % len(spare)] for label in labels}


def write_timeline(rows: Sequence[Mapping[str, Any]], png: str | Path) -> tuple[Path, Path]:
    """`png` and the page beside it (same name, .html); returns both paths."""
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    page = png.with_suffix(".html")
    write_png(rows, png)
    page.write_text(html_page(rows), encoding="utf-8")
    return png, page


def write_png(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    fig = timeline_figure(rows)
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt  # after timeline_figure chose the Agg backend

    plt.close(fig)
    return path


def timeline_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """One panel per dialogue, its turns on one scale for all panels: a bar per turn in the colour of the predicted
    emotion, as high as its probability, and under it a strip split by the gate weights of text / audio / visual."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    dialogues = by_dialogue(rows)
    shown = dialogues[:PNG_DIALOGUES]
    colours = label_colours(rows)
    longest = max((len(t) for _, t in shown), default=1)
    width = min(max(6.0, 0.9 * longest + 2), 30.0)
    fig, axes = plt.subplots(max(1, len(shown)), 1, figsize=(width, 2.4 * max(1, len(shown))), squeeze=False,
                             layout="constrained")
    for ax, (dialogue, turns) in zip(axes[:, 0], shown, strict=False):
        x = list(range(len(turns)))
        probabilities = [float(r["probability"]) for r in turns]
        ax.bar(x, probabilities, width=BAR, color=[colours.get(str(r["label"]), "black") for r in turns])
        for i, r in enumerate(turns):
            ax.text(i, probabilities[i] + 0.03, f"{r['label']}\n{probabilities[i]:.2f}", ha="center", va="bottom",
                    fontsize=7)
            left = i - BAR / 2
            for gate in GATES:
                share = BAR * float(r["gate"].get(gate, 0.0))
                ax.add_patch(Rectangle((left, -0.3), share, 0.18, color=GATE_COLOURS[gate], linewidth=0))
                left += share
        ax.axhline(0, color="#999999", linewidth=0.6)
        ax.set_xticks(x, [f"{r['turn']}\n{r.get('speaker') or '-'}" for r in turns], fontsize=8)
        ax.set_xlim(-0.5, longest - 0.5)
        ax.set_ylim(-0.34, 1.3)
        ax.set_yticks([0, 0.5, 1])
        ax.set_ylabel("probability", fontsize=8)
        ax.set_title(f"dialogue {dialogue}", fontsize=9, loc="left")
        ax.spines[["top", "right"]].set_visible(False)
    keys = [Patch(color=c, label=label) for label, c in colours.items()]
    keys += [Patch(color=GATE_COLOURS[g], label=f"gate: {g}") for g in GATES]
    fig.legend(handles=keys, loc="outside upper right", fontsize=7, ncols=min(len(keys), 10), frameon=False)
    if len(dialogues) > len(shown):  # under the panels: the legend holds the top
        fig.supxlabel(f"the first {len(shown)} of {len(dialogues)} dialogues (the HTML page shows all)", fontsize=9)
    return fig


def html_page(rows: Sequence[Mapping[str, Any]]) -> str:
    colours = label_colours(rows)
    e = html.escape
    legend = " ".join(f'<span class="key" style="background:{GATE_COLOURS[g]}"></span>{g}' for g in GATES)
    labels = " ".join(f'<span class="key" style="background:{c}"></span>{e(label)}' for label, c in colours.items())
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>hjcag predict: emotion timeline</title>',
        "<style>body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}"
        "section{margin-bottom:1.5em}h2{font-size:15px;margin:.4em 0}"
        ".turns{display:flex;flex-wrap:wrap;gap:.5em}"
        ".turn{border:1px solid #ccc;border-left-width:8px;border-radius:6px;padding:.4em .6em;width:9em}"
        ".speaker{color:#555;font-size:12px}.label{font-weight:bold}.p{color:#555}"
        ".gate{display:flex;height:10px;margin-top:.3em;background:#eee}.gate div{height:100%}"
        ".key{display:inline-block;width:10px;height:10px;margin:0 .3em 0 .8em}</style></head><body>",
        f"<h1>Emotion per turn</h1><p>{len(rows)} utterances. The card's left edge: the predicted emotion. {labels}"
        f"</p><p>Bar: the gate weight of each modality. {legend}</p>",
    ]
    for dialogue, turns in by_dialogue(rows):
        parts.append(f'<section class="dialogue" data-dialogue="{e(dialogue)}"><h2>dialogue {e(dialogue)}</h2>'
                     '<div class="turns">')
        for r in turns:
            label = str(r["label"])
            bars = "".join(f'<div title="{g} {float(r["gate"].get(g, 0.0)):.2f}" style="width:'
                           f'{100 * float(r["gate"].get(g, 0.0)):.1f}%;background:{GATE_COLOURS[g]}"></div>'
                           for g in GATES)
            gates = ", ".join(f"{g} {float(r['gate'].get(g, 0.0)):.2f}" for g in GATES)
            parts.append(
                f'<div class="turn" data-utterance="{e(str(r["utterance_id"]))}" data-turn="{int(r["turn"])}" '
                f'style="border-left-color:{colours.get(label, "#000")}">'
                f'<div class="speaker">{int(r["turn"])} · {e(str(r.get("speaker") or "-"))}</div>'
                f'<div class="label">{e(label)} '
                f'<span class="p">{float(r["probability"]):.2f}</span></div>'
                f'<div class="gate">{bars}</div><div class="speaker">{e(gates)}</div></div>')
        parts.append("</div></section>")
    parts.append("</body></html>")
    return "\n".join(parts)
