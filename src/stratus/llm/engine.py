"""The continuous-batching engine: one thread steps the model over every running sequence at once.

Each iteration: empty the rows of sequences that finished or were cancelled, prefill the ones
admitted since the last step (batched), post their first token at once and put them into empty
rows, then run one decode step for the whole batch and post one token per sequence. See
docs/llm.md.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from stratus.errors import HandlerError, Unavailable
from stratus.llm.kvcache import BatchKVCache
from stratus.llm.sampling import BatchParams, SamplingParams, sample
from stratus.llm.scheduler import Limits, Scheduler
from stratus.llm.sequence import Delivery, Sequence, post


@dataclass(frozen=True)
class EngineOptions:
    max_num_seqs: int = 16
    max_num_tokens: int = 16 * 1024
    max_queue: int = 256
    # Padded prompt tokens per prefill forward: bounds the activation memory of a burst of
    # joins, and lets the first of them get their first token before the whole burst is done.
    max_prefill_tokens: int = 512


class Engine:
    def __init__(self, model: Any, *, eos_ids: Collection[int], context_length: int,
                 options: EngineOptions, pad_id: int = 0, logger: logging.Logger | None = None) -> None:
        self._model = model
        self._max_position = context_length - 1
        self._layers = int(model.config.get_text_config().num_hidden_layers)
        self._eos = torch.tensor(sorted(eos_ids), dtype=torch.long)
        self._pad_id = pad_id
        self._options = options
        self._logger = logger or logging.getLogger("stratus.llm")
        self._prefill_kwargs: dict[str, Any] = {}
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            # Only the last position's logits are needed: skips the LM head for the rest of the prompt.
            self._prefill_kwargs["logits_to_keep"] = 1
        self._lock = threading.Condition()
        self._scheduler: Scheduler[Sequence] = Scheduler(
            Limits(options.max_num_seqs, options.max_num_tokens, options.max_queue))
        self._joining: list[Sequence] = []  # admitted, not yet prefilled
        self._closed = False
        # The running batch; only the engine thread touches it. Row i of every tensor is rows[i].
        self._rows: list[Sequence | None] = []  # None: an empty row, see _retire_finished
        self._cache = BatchKVCache(self._layers)
        self._last = torch.zeros(0, dtype=torch.long)  # last sampled token, the next step's input
        self._positions = torch.zeros(0, dtype=torch.long)  # position id of that token
        self._generated = torch.zeros(0, dtype=torch.long)
        self._limits = torch.zeros(0, dtype=torch.long)
        self._params = BatchParams.build([], [])
        self._thread = threading.Thread(target=self._run, name="stratus-llm-engine", daemon=True)
        self._thread.start()

    # -- called from the asyncio side -------------------------------------------------------

    def submit(self, prompt: list[int], params: SamplingParams, max_tokens: int,
               loop: asyncio.AbstractEventLoop) -> Sequence:
        """Queue a sequence; raises ``Shed`` when the queue is full."""
        seq = Sequence(prompt, params, max_tokens, loop)
        with self._lock:
            if self._closed:
                raise Unavailable("the LLM engine is stopping")
            if self._scheduler.submit(seq, seq.cost):
                self._joining.append(seq)
                self._lock.notify()
        return seq

    def cancel(self, seq: Sequence) -> None:
        """The consumer is gone or done: give back the capacity now; the row leaves at the next step."""
        with self._lock:
            if seq.released:
                return
            seq.cancelled = True
            self._release(seq)
            if seq in self._joining:
                self._joining.remove(seq)
            self._lock.notify()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return self._scheduler.stats()

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _release(self, seq: Sequence) -> None:
        """With the lock held: free ``seq``'s capacity and queue the sequences that now fit."""
        seq.released = True
        self._joining.extend(self._scheduler.release(seq))

    # -- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._lock:
                    while not self._closed and not self._joining and not self._rows:
                        self._lock.wait()
                    if self._closed:
                        break
                    joining, self._joining = self._joining, []
                try:
                    self._iterate(joining)
                except Exception as exc:
                    self._logger.exception("LLM engine step failed")
                    self._fail(joining, HandlerError(f"the model failed while generating: "
                                                     f"{type(exc).__name__}: {exc}"))
        with self._lock:
            leftovers = self._scheduler.drain()
            for seq in leftovers:
                seq.released = True
        self._fail(leftovers, Unavailable("the LLM engine stopped"))

    def _iterate(self, joining: list[Sequence]) -> None:
        self._retire_finished()
        joining = [seq for seq in joining if not seq.cancelled]
        for group in self._prefill_groups(joining):
            self._prefill(group)
        self._compact()
        if self._rows:
            self._decode()

    def _prefill_groups(self, joining: list[Sequence]) -> list[list[Sequence]]:
        """Split the newcomers into prefill batches of at most ``max_prefill_tokens`` padded
        tokens. Shortest first: less padding, and the short prompts get their first token soonest."""
        groups: list[list[Sequence]] = []
        for seq in sorted(joining, key=lambda s: len(s.prompt)):
            # Sorted, so this prompt is the group's longest: the group pads to its length.
            if groups and len(seq.prompt) * (len(groups[-1]) + 1) <= self._options.max_prefill_tokens:
                groups[-1].append(seq)
            else:
                groups.append([seq])
        return groups

    def _retire_finished(self) -> None:
        """Empty the rows of finished and cancelled sequences. A row is emptied, not removed:
        removing copies the whole cache, so an empty row waits for a newcomer (``_prefill``) or
        for ``_compact``. Meanwhile it decodes a placeholder that attends only to itself."""
        for row, seq in enumerate(self._rows):
            if seq is not None and (seq.done or seq.cancelled):
                self._rows[row] = None
                self._cache.clear_row(row)
                self._params.set_row(row, None, None)
                self._positions[row] = 0

    def _compact(self) -> None:
        """Remove empty rows once they are a quarter of the batch (bounded wasted compute)."""
        keep = [row for row, seq in enumerate(self._rows) if seq is not None]
        if not keep:
            self._reset_batch()
            return
        if (len(self._rows) - len(keep)) * 4 < len(self._rows):
            self._cache.trim()  # rows that finished or were reused may have freed leading columns
            return
        index = torch.tensor(keep, dtype=torch.long)
        self._rows = [self._rows[row] for row in keep]
        self._cache.select(keep)
        self._last, self._positions, self._generated, self._limits = (
            t.index_select(0, index) for t in (self._last, self._positions, self._generated, self._limits))
        self._params = self._params.select(keep)

    def _reset_batch(self) -> None:
        self._rows = []
        self._cache = BatchKVCache(self._layers)
        self._last = self._positions = self._generated = self._limits = torch.zeros(0, dtype=torch.long)
        self._params = BatchParams.build([], [])

    def _prefill(self, group: list[Sequence]) -> None:
        """Run the prompts of ``group`` as one left-padded batch, post each first token, then
        move the survivors into empty rows of the running batch, or append them."""
        lengths = [len(seq.prompt) for seq in group]
        width = max(lengths)
        ids = torch.full((len(group), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for row, seq in enumerate(group):
            ids[row, width - len(seq.prompt):] = torch.tensor(seq.prompt, dtype=torch.long)
            mask[row, width - len(seq.prompt):] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = BatchKVCache(self._layers)
        cache.mask = mask
        out = self._model(input_ids=ids, attention_mask=mask, position_ids=positions,
                          past_key_values=cache, use_cache=True, **self._prefill_kwargs)
        params = BatchParams.build([seq.params for seq in group], [seq.generator for seq in group])
        tokens = sample(out.logits[:, -1, :], params)
        self._post(group, tokens, torch.ones(len(group), dtype=torch.long),
                   torch.tensor([seq.max_tokens for seq in group], dtype=torch.long))
        appended: list[int] = []
        for i, seq in enumerate(group):
            if seq.done or seq.cancelled:
                continue
            slot = self._empty_row(lengths[i])
            if slot is None:
                appended.append(i)
                continue
            self._cache.place(slot, cache, i, lengths[i])
            self._rows[slot] = seq
            self._params.set_row(slot, seq.params, seq.generator)
            self._last[slot] = tokens[i]
            self._positions[slot] = lengths[i]
            self._generated[slot] = 1
            self._limits[slot] = seq.max_tokens
        if appended:
            self._append(cache, appended, [group[i] for i in appended], tokens, params)

    def _empty_row(self, tokens: int) -> int | None:
        if tokens > self._cache.length:
            return None  # would need more left padding for everyone: append instead
        return next((row for row, seq in enumerate(self._rows) if seq is None), None)

    def _append(self, cache: BatchKVCache, rows: list[int], seqs: list[Sequence],
                tokens: torch.Tensor, params: BatchParams) -> None:
        index = torch.tensor(rows, dtype=torch.long)
        if len(rows) < cache.rows:
            cache.select(rows)
            params = params.select(rows)
        self._cache.merge(cache)
        self._rows += seqs
        self._last = torch.cat([self._last, tokens.index_select(0, index)])
        self._positions = torch.cat([self._positions, torch.tensor([len(s.prompt) for s in seqs])])
        self._generated = torch.cat([self._generated, torch.ones(len(rows), dtype=torch.long)])
        self._limits = torch.cat([self._limits, torch.tensor([s.max_tokens for s in seqs])])
        self._params = self._params.concat(params)

    def _decode(self) -> None:
        mask = self._cache.mask_for_step(1)
        out = self._model(input_ids=self._last[:, None], attention_mask=mask,
                          position_ids=self._positions[:, None], past_key_values=self._cache,
                          use_cache=True)
        tokens = sample(out.logits[:, -1, :], self._params)
        # Live rows stop before the context window; empty rows must not walk past it either.
        self._positions = (self._positions + 1).clamp_(max=self._max_position)
        self._generated += 1
        self._last = tokens
        self._post(self._rows, tokens, self._generated, self._limits)

    def _post(self, seqs: Iterable[Sequence | None], tokens: torch.Tensor, generated: torch.Tensor,
              limits: torch.Tensor) -> None:
        """Send each sequence its token; mark and release the ones that just finished."""
        at_eos = torch.isin(tokens, self._eos).tolist()
        at_limit = (generated >= limits).tolist()
        deliveries: list[Delivery] = []
        finished: list[Sequence] = []
        for seq, token, eos, limit in zip(seqs, tokens.tolist(), at_eos, at_limit, strict=True):
            if seq is None or seq.cancelled:
                continue
            reason = "stop" if eos else "length" if limit else None
            if reason is not None:
                seq.done = True
                finished.append(seq)
            deliveries.append((seq, token, reason, None))
        for orphan in post(deliveries):
            orphan.done = True
            finished.append(orphan)
        if finished:
            with self._lock:
                for seq in finished:
                    if not seq.released:
                        self._release(seq)

    def _fail(self, joining: list[Sequence], error: BaseException) -> None:
        """Finish every sequence in the batch (and those about to join) with ``error``."""
        victims = list(dict.fromkeys([*(s for s in self._rows if s is not None), *joining]))
        self._reset_batch()
        for seq in victims:
            seq.done = True
        post((seq, None, None, error) for seq in victims)
        with self._lock:
            for seq in victims:
                if not seq.released:
                    self._release(seq)
