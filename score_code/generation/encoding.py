"""Generation backends (hf.py: transformers, vllm.py: vLLM) and their shared token-in/token-out bookkeeping.

Both backends implement benchmarks.generation.Generator. What they share lives here and needs only a tokenizer:
`DialogueEncoder` turns a Dialogue into prompt token ids, encoding only the messages after `encoded_messages`
and appending them to the ids the dialogue already carries (earlier turns are never decoded and re-tokenized);
`finish` cuts a raw completion at EOS or a stop string and builds the Generation; `digit_ids` tells the runaway
rules (benchmarks.stopping) which tokens are digits.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.errors import ScoreCodeError
from benchmarks.generation import Dialogue, Generation
from benchmarks.stopping import digit_token_ids

# Stands in for the last encoded assistant message when rendering, so the text the template puts after it
# (end-of-turn tokens, the new user turn, the generation prompt) can be cut out of the rendering.
_SENTINEL = "\x00score-code:encoded-up-to-here\x00"


class DialogueEncodingError(ScoreCodeError):
    """A Dialogue cannot be encoded (bad roles, a template that does not render it prefix-stably)."""


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a completion: the model's generation_config EOS ids plus the tokenizer's EOS."""
    ids: list[int] = []
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.append(config_eos)
    elif config_eos:
        ids.extend(int(i) for i in config_eos)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def digit_ids(tokenizer: Any) -> frozenset[int]:
    """The vocabulary's all-digit tokens, for the counting-loop rule (benchmarks.stopping.LoopWatch)."""
    return digit_token_ids(tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))


def resolve_chat(tokenizer: Any, chat: bool | None) -> bool:
    """Whether prompts go through the tokenizer's chat template: `chat`, or when None, whether it has one."""
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if chat and not has_template:
        raise DialogueEncodingError("chat=True but the tokenizer has no chat template; use chat=False "
                                    "(plain prompts through benchmarks.prompts.render_plain)")
    return has_template if chat is None else chat


class DialogueEncoder:
    """Dialogue -> prompt token ids through the chat template (chat=True) or benchmarks.prompts.render_plain."""

    def __init__(self, tokenizer: Any, eos_ids: Sequence[int], chat: bool | None = None) -> None:
        self.tokenizer = tokenizer
        self.chat = resolve_chat(tokenizer, chat)
        self.eos_ids = set(eos_ids)

    def render(self, messages: list[dict[str, str]]) -> str:
        """The full prompt text of a dialogue whose last message is the user's (ends with the generation prompt)."""
        if self.chat:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        from benchmarks.prompts import render_plain

        return render_plain(messages)

    def _tokenize(self, text: str, first: bool) -> list[int]:
        # Chat templates write their special tokens (BOS included) as text; a plain prompt gets the
        # tokenizer's own special tokens once, at its very start.
        add_special = first and not self.chat
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def encode(self, dialogue: Dialogue) -> list[int]:
        """Prompt ids for the next assistant turn of `dialogue`."""
        messages = dialogue.messages
        if not messages or messages[-1]["role"] != "user":
            raise DialogueEncodingError(
                f"a dialogue to generate from must end with a user message; got roles "
                f"{[m['role'] for m in messages]}"
            )
        if dialogue.token_ids is None:
            return self._tokenize(self.render(messages), first=True)
        n = dialogue.encoded_messages
        if not 0 < n < len(messages):
            raise DialogueEncodingError(
                f"dialogue has token_ids for {n} encoded messages but {len(messages)} messages; "
                "expected 0 < encoded_messages < len(messages)"
            )
        if messages[n - 1]["role"] != "assistant":
            raise DialogueEncodingError(
                f"encoded_messages={n} must end at an assistant message (a previous completion), "
                f"got role {messages[n - 1]['role']!r}"
            )
        marked = [*messages[: n - 1], {"role": "assistant", "content": _SENTINEL}, *messages[n:]]
        rendered = self.render(marked)
        at = rendered.find(_SENTINEL)
        if at < 0:
            raise DialogueEncodingError("the chat template dropped the previous assistant message; "
                                        "cannot append the new turn to its token ids")
        tail = rendered[at + len(_SENTINEL):]
        token_ids = list(dialogue.token_ids)
        if self.chat and token_ids and token_ids[-1] in self.eos_ids:
            # The completion already ends with the end-of-turn token the template writes after it.
            eos_text = self.tokenizer.decode([token_ids[-1]])
            if tail.startswith(eos_text):
                tail = tail[len(eos_text):]
        return token_ids + self._tokenize(tail, first=False)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` cut right after the earliest stop string in it, and whether one was found."""
    ends = [text.find(s) + len(s) for s in stop if s and s in text]
    if not ends:
        return text, False
    return text[: min(ends)], True


def finish(
    dialogue: Dialogue,
    prompt_ids: list[int],
    completion_ids: list[int],
    text: str,
    hit_eos_or_stop: bool,
    stop: Sequence[str],
) -> Generation:
    """The Generation for one completion: text cut after a stop string, the dialogue extended by one turn."""
    text, found = cut_at_stop(text, stop)
    reply = Dialogue(
        messages=[*dialogue.messages, {"role": "assistant", "content": text}],
        token_ids=prompt_ids + completion_ids,
        encoded_messages=len(dialogue.messages) + 1,
    )
    return Generation(
        text=text,
        token_ids=completion_ids,
        prompt_token_ids=prompt_ids,
        finish_reason="stop" if hit_eos_or_stop or found else "length",
        dialogue=reply,
    )
