"""A client for the hjcag endpoint: whole conversations in, one answer per turn out.

* :class:`Client` (:mod:`hjcag.client.http`): a served model over HTTP, standard library only, with retries;
* :class:`LocalClient` (:mod:`hjcag.client.local`): the same answers in process, from a ``.mar`` or a run directory;
* :func:`turn`: one turn's request body (text, wav / mp4 files, features packed);
* ``client.predict_dialogue(turns)``: the turns in order, each sent with the previous answers' states.

``import hjcag.client`` stays light (no torch): :class:`LocalClient` is imported when first named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hjcag.client.body import turn
from hjcag.client.conversation import Answer, Conversation, DialogueClient, EndpointError
from hjcag.client.http import TOKEN_ENV, Client

if TYPE_CHECKING:
    from hjcag.client.local import LocalClient

__all__ = ["TOKEN_ENV", "Answer", "Client", "Conversation", "DialogueClient", "EndpointError", "LocalClient", "turn"]


def __getattr__(name: str) -> Any:
    if name == "LocalClient":
        from hjcag.client.local import LocalClient

        return LocalClient
    raise AttributeError(f"module 'hjcag.client' has no attribute {name!r}")
