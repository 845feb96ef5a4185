"""Driving a conversation through a context model: each turn sent with the states of the previous answers.

Serving is stateless (README "Conversation context"): a context model's answer carries the turn's ``state``, and a
later request lists the states of its previous turns, oldest first, under ``context``, at most the model's
``context_window`` of them. This module does that bookkeeping for any way of asking (HTTP: :mod:`hjcag.client.http`,
in process: :mod:`hjcag.client.local`).

How a client learns the window: every answer of a context model says it (``context_window``), so a client that was
not told it (``context_window=None``) sends no context with the first turn (there is none yet) and keeps the window
from that first answer (or from the rows of an earlier run it resumes). A model without context (or whose context
layer was dropped) returns no state, so its requests carry no context; one whose text encoder reads the preceding
turns (features.text_context) returns a state with window 1: the last state carries those turns' text.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from hjcag.errors import DataError, HjcagError

Answer = dict[str, Any]  # the endpoint's JSON answer: label, probabilities, gate, modalities, model, version,
# and for a context model state, context_turns, context_window, context_kept


class EndpointError(HjcagError):
    """The endpoint refused a request (`status`: the HTTP status, `message`: the server's own words), or could not
    be reached (`status` None)."""

    def __init__(self, message: str, status: int | None = None, server_message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.server_message = server_message if server_message is not None else message


class DialogueClient(ABC):
    """Asks a served model one request at a time (:meth:`answer`) and drives whole conversations through it."""

    def __init__(self, context_window: int | None = None) -> None:
        """`context_window`: how many previous turns the model reads (None: learned from the endpoint)."""
        self.context_window = context_window
        self._lock = threading.Lock()

    @abstractmethod
    def answer(self, body: Mapping[str, Any]) -> Answer:
        """One request body -> its answer; :class:`EndpointError` when refused."""

    @abstractmethod
    def close(self) -> None:
        """Let go of what the client holds (connections, an unpacked archive); it may not be used afterwards."""

    def __enter__(self) -> DialogueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def conversation(self) -> Conversation:
        """A conversation to send turn by turn (a live one), or to resume after answers already got."""
        return Conversation(self)

    def predict_dialogue(self, turns: Sequence[Mapping[str, Any]]) -> list[Answer]:
        """Each turn of one dialogue, in order (request bodies without ``context``, e.g. from
        :func:`hjcag.client.turn`), answered with the previous turns as context: one answer per turn."""
        conversation = self.conversation()
        return [conversation.ask(t) for t in turns]

    def learn_window(self, answer: Mapping[str, Any]) -> None:
        """Keep the window an answer states (``context_window``) when none was given."""
        window = answer.get("context_window")
        if window is not None and self.context_window is None:
            with self._lock:
                self.context_window = int(window)


class Conversation:
    """The states of one conversation's earlier turns, and its next request."""

    def __init__(self, client: DialogueClient) -> None:
        self.client = client
        self.history: list[dict[str, str]] = []  # {"state", "speaker"} of every earlier turn, oldest first

    def remember(self, answer: Mapping[str, Any], speaker: str | None) -> None:
        """An earlier turn's answer (got before, e.g. read back from an output file) as the next turns' context."""
        self.client.learn_window(answer)
        state = answer.get("state")
        if state is not None:
            self.history.append({"state": str(state), **({"speaker": speaker} if speaker is not None else {})})

    def ask(self, turn: Mapping[str, Any]) -> Answer:
        """The answer to the next turn (a request body without ``context``)."""
        if "context" in turn:
            raise DataError("a turn passed to the client carries 'context'; leave it out: the client sends the "
                            "previous turns' states itself.")
        answer = self.client.answer(self._body(turn, self.client.context_window))
        self.remember(answer, turn.get("speaker"))
        return answer

    def _body(self, turn: Mapping[str, Any], window: int | None) -> dict[str, Any]:
        context = self.history if window is None else self.history[-window:] if window else []
        return {**turn, "context": context} if context else dict(turn)
