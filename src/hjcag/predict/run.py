"""Answering a whole input: dialogues in parallel (up to `concurrency`), the turns of each in order, every answer
appended to the output as it comes; a re-run answers only what the output lacks, continuing a dialogue cut short
with the states its rows hold."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from hjcag.client.conversation import DialogueClient, EndpointError
from hjcag.predict.inputs import Utterance
from hjcag.predict.rows import RowsFile, make_row
from hjcag.progress import progress

PROGRESS_FROM = 32  # utterances: a shorter input gets no progress report


def answer_dialogues(client: DialogueClient, dialogues: Sequence[Sequence[Utterance]], out: RowsFile,
                     done: Mapping[str, Mapping[str, Any]], concurrency: int = 4) -> int:
    """Answer every utterance of `dialogues` not in `done` (rows by utterance id), appending rows to `out`;
    returns how many were answered. The first refusal stops the run (rows written so far stay) and is raised,
    naming the utterance."""
    todo = [d for d in dialogues if any(u.utterance_id not in done for u in d)]
    total = sum(u.utterance_id not in done for d in todo for u in d)
    stop = threading.Event()
    lock = threading.Lock()
    bar = progress(total=total, desc="predict", unit="utt", disable=total < PROGRESS_FROM)
    answered = 0

    def one(dialogue: Sequence[Utterance]) -> None:
        try:
            ask(dialogue)
        except BaseException:
            stop.set()  # the run stops: no dialogue starts another turn
            raise

    def ask(dialogue: Sequence[Utterance]) -> None:
        nonlocal answered
        conversation = client.conversation()
        for position, utterance in enumerate(dialogue):
            if utterance.utterance_id in done:
                conversation.remember(done[utterance.utterance_id], utterance.speaker)
                continue
            if stop.is_set():
                return
            try:
                answer = conversation.ask(utterance.body)
            except EndpointError as exc:
                raise EndpointError(f"utterance '{utterance.utterance_id}' (dialogue '{utterance.dialogue}', turn "
                                    f"{position}): {exc}", exc.status, exc.server_message) from None
            out.append(make_row(utterance, position, answer))
            with lock:
                answered += 1
                bar.update(1)

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="hjcag-predict") as pool:
            futures = [pool.submit(one, d) for d in todo]
            try:
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                for future in finished:
                    future.result()  # the first failure
            except BaseException:
                stop.set()
                for future in futures:
                    future.cancel()
                raise
    finally:
        bar.close()
    return answered
