"""HFGenerator and the DialogueEncoder: golden chat prompts, token-in/token-out, stop strings, EOS, left padding,
seeds, and generating from a live (training) model."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks import prompts
from benchmarks.generation import Dialogue, Generator, SamplingParams
from benchmarks.stopping import runaway_cut
from benchmarks.tasks import load_humaneval, load_mbpp, mbpp_shots
from score_code.generation.encoding import DialogueEncoder, DialogueEncodingError, cut_at_stop, digit_ids
from score_code.generation.hf import HFGenerator

MBPP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mbpp.jsonl"
SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
P1 = ("There might be an error in the code above because of lack of understanding of the question. "
      "Please correct the error, if any, and rewrite the solution. Only output the final correct Python program!")
TURN2 = f"<|im_end|>\n<|im_start|>user\n{P1}<|im_end|>\n<|im_start|>assistant\n"
PROMPTS = ["Write a function that adds two numbers.", "def fib(n):",
           "Hello there, how are you today? Tell me a story about a cat who learns Python."]


def _user(text: str) -> Dialogue:
    return Dialogue(messages=[{"role": "user", "content": text}])


@pytest.fixture
def peaky_model(tiny_model):
    """The tiny model with wider weights, so greedy decoding gives varied text and clear argmax margins."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in tiny_model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return tiny_model


def _encode_completion(tokenizer, prompt_ids: list[int], completion: str, eos: bool) -> Dialogue:
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eos else [])
    return Dialogue(messages=[], token_ids=prompt_ids + ids)


# --- golden prompts with the real SmolLM2 tokenizer --------------------------------------------------------------


def test_humaneval_golden_prompts(tokenizer):
    task = load_humaneval()[0]
    encoder = DialogueEncoder(tokenizer, [tokenizer.eos_token_id])
    first = prompts.first_dialogue(task)
    attempt1 = encoder.render(first.messages)
    assert attempt1 == (
        SYSTEM + "<|im_start|>user\nComplete the following Python function. Write the whole function, with the "
        "imports it needs, in one ```python code block.\n\n```python\nfrom typing import List\n\n\n"
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        + task.prompt.split("-> bool:\n", 1)[1].rstrip() + "\n```<|im_end|>\n<|im_start|>assistant\n"
    )
    prompt_ids = encoder.encode(first)
    assert tokenizer.decode(prompt_ids) == attempt1

    completion = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```\n"
    first.messages.append({"role": "assistant", "content": completion})
    first.token_ids = _encode_completion(tokenizer, prompt_ids, completion, eos=True).token_ids
    first.encoded_messages = 2
    prompts.append_self_correction(first, prompts.SELF_CORRECTION_INSTRUCTION)
    turn2_ids = encoder.encode(first)
    assert tokenizer.decode(turn2_ids) == attempt1 + completion + TURN2
    assert tokenizer.decode(turn2_ids) == tokenizer.apply_chat_template(first.messages, tokenize=False,
                                                                         add_generation_prompt=True)


@pytest.mark.skipif(not MBPP.exists(), reason=f"{MBPP} not present (shared data beside the repo)")
def test_mbpp_golden_prompts(tokenizer):
    task = load_mbpp(MBPP, "test")[0]
    shots = mbpp_shots(load_mbpp(MBPP, "prompt"))
    encoder = DialogueEncoder(tokenizer, [tokenizer.eos_token_id])
    first = prompts.first_dialogue(task, shots)
    attempt1 = encoder.render(first.messages)
    user = first.messages[0]["content"]
    assert attempt1 == SYSTEM + "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n"
    assert user.startswith(
        "You are an expert Python programmer, and here is your task: Write a function to find the similar elements "
        "from the given two tuple lists. Your code should pass these tests:\n\nassert similar_elements((3, 4, 5, 6),"
        "(5, 7, 4, 10)) == (4, 5)\n"
    )
    assert user.count("[BEGIN]\n") == 4 and user.count("[DONE]") == 3
    tests = "\n".join(task.test_list_for_prompt or task.tests)
    assert user.endswith(f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")

    prompt_ids = encoder.encode(first)
    completion = "def remove_Occ(s, ch):\n    return s.replace(ch, '', 1)\n[DONE]"
    first.messages.append({"role": "assistant", "content": completion})
    first.token_ids = _encode_completion(tokenizer, prompt_ids, completion, eos=False).token_ids  # stop string
    first.encoded_messages = 2
    prompts.append_self_correction(first, P1)
    turn2_ids = encoder.encode(first)
    assert turn2_ids[:len(first.token_ids)] == first.token_ids
    assert tokenizer.decode(turn2_ids) == attempt1 + completion + TURN2


# --- token-in/token-out ------------------------------------------------------------------------------------------


def test_turn_two_appends_to_attempt_one_ids_verbatim(peaky_model, tokenizer):
    generator = HFGenerator(peaky_model, tokenizer, batch_size=2)
    assert isinstance(generator, Generator)
    firsts = generator.generate([_user(PROMPTS[0]), _user(PROMPTS[1])], SamplingParams(max_new_tokens=6))
    for gen in firsts:
        assert gen.dialogue.token_ids == gen.prompt_token_ids + gen.token_ids
        assert gen.dialogue.encoded_messages == 2 and gen.dialogue.messages[-1] == {"role": "assistant",
                                                                                     "content": gen.text}
    seconds = generator.generate([prompts.append_self_correction(g.dialogue, P1) for g in firsts],
                                 SamplingParams(max_new_tokens=4))
    p1_ids = tokenizer(P1, add_special_tokens=False)["input_ids"]
    for first, second in zip(firsts, seconds, strict=True):
        prefix = first.prompt_token_ids + first.token_ids
        assert second.prompt_token_ids[:len(prefix)] == prefix
        suffix = second.prompt_token_ids[len(prefix):]
        assert first.finish_reason == "length"  # no EOS in the ids: the end-of-turn token is appended
        assert tokenizer.decode(suffix) == TURN2
        assert any(suffix[i:i + len(p1_ids)] == p1_ids for i in range(len(suffix)))
        assert second.dialogue.encoded_messages == 4


def test_completion_that_emitted_eos_gets_no_second_end_of_turn(tokenizer):
    encoder = DialogueEncoder(tokenizer, [tokenizer.eos_token_id])
    prompt_ids = encoder.encode(_user("hi"))
    d = _encode_completion(tokenizer, prompt_ids, "x = 1", eos=True)
    d.messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x = 1"},
                  {"role": "user", "content": P1}]
    d.encoded_messages = 2
    ids = encoder.encode(d)
    assert ids[:len(d.token_ids)] == d.token_ids
    assert tokenizer.decode(ids[len(d.token_ids):]) == TURN2.removeprefix("<|im_end|>")


def test_earlier_ids_are_never_retokenized(tokenizer):
    """A completion sampled as odd pieces (one id per character) stays exactly as sampled."""
    encoder = DialogueEncoder(tokenizer, [tokenizer.eos_token_id])
    prompt_ids = encoder.encode(_user("hi"))
    pieces = [tokenizer.convert_tokens_to_ids(c) for c in "return"]
    assert tokenizer(["return"], add_special_tokens=False)["input_ids"][0] != pieces  # not the canonical ids
    d = Dialogue(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "return"},
                           {"role": "user", "content": P1}], token_ids=prompt_ids + pieces, encoded_messages=2)
    assert encoder.encode(d)[:len(prompt_ids) + len(pieces)] == prompt_ids + pieces


def test_plain_prompts_without_chat_template(tokenizer):
    encoder = DialogueEncoder(tokenizer, [tokenizer.eos_token_id], chat=False)
    first = Dialogue(messages=[{"role": "user", "content": "def f():\n"}])
    ids = encoder.encode(first)
    assert tokenizer.decode(ids) == "def f():\n"
    completion = _encode_completion(tokenizer, ids, "    return 1\n", eos=False)
    d = Dialogue(messages=[*first.messages, {"role": "assistant", "content": "    return 1\n"},
                           {"role": "user", "content": P1}], token_ids=completion.token_ids, encoded_messages=2)
    ids2 = encoder.encode(d)
    assert ids2[:len(completion.token_ids)] == completion.token_ids
    assert tokenizer.decode(ids2) == prompts.render_plain(d.messages)


def test_bad_dialogues_are_refused(tokenizer):
    encoder = DialogueEncoder(tokenizer, [tokenizer.eos_token_id])
    with pytest.raises(DialogueEncodingError, match="must end with a user message"):
        encoder.encode(Dialogue(messages=[{"role": "assistant", "content": "x"}]))
    with pytest.raises(DialogueEncodingError, match="must end at an assistant message"):
        encoder.encode(Dialogue(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                                token_ids=[1, 2], encoded_messages=1))
    with pytest.raises(DialogueEncodingError, match="encoded_messages"):
        encoder.encode(Dialogue(messages=[{"role": "user", "content": "a"}], token_ids=[1], encoded_messages=1))


# --- decoding: stop strings, EOS, padding, seeds -----------------------------------------------------------------


def test_cut_at_stop_keeps_the_earliest_stop_string():
    assert cut_at_stop("abc\n```\nmore\n```\n", ("\n```\n",)) == ("abc\n```\n", True)
    assert cut_at_stop("x [DONE] y ```", ("```", "[DONE]")) == ("x [DONE]", True)
    assert cut_at_stop("no stop here", ("\ndef ",)) == ("no stop here", False)


def test_stop_string_ends_one_sequence_while_the_batch_continues(peaky_model, tokenizer):
    generator = HFGenerator(peaky_model, tokenizer, batch_size=3)
    dialogues = [_user(p) for p in PROMPTS]
    free = generator.generate(dialogues, SamplingParams(max_new_tokens=12))
    assert all(g.finish_reason == "length" and len(g.token_ids) == 12 for g in free)
    target = free[0]
    # a stop string that completes in the middle of the first completion and nowhere in the others
    cut_ids = target.token_ids[:6]
    stop = tokenizer.decode(cut_ids)[-3:]
    assert stop and all(stop not in g.text for g in free[1:])
    stopped = generator.generate(dialogues, SamplingParams(max_new_tokens=12, stop=(stop,)))
    first = stopped[0]
    assert first.finish_reason == "stop"
    assert first.text == cut_at_stop(target.text, (stop,))[0] and first.text.endswith(stop)
    assert target.token_ids[:len(first.token_ids)] == first.token_ids  # through the token that completed it
    assert stop in tokenizer.decode(first.token_ids) and stop not in tokenizer.decode(first.token_ids[:-1])
    for before, after in zip(free[1:], stopped[1:], strict=False):
        assert after.token_ids == before.token_ids and after.text == before.text and after.finish_reason == "length"


def test_stop_strings_match_only_the_completion(peaky_model, tokenizer):
    """The prompt ends with 'assistant\\n'; a stop string starting there must not end the completion early."""
    generator = HFGenerator(peaky_model, tokenizer, batch_size=1)
    free = generator.generate([_user(PROMPTS[1])], SamplingParams(max_new_tokens=6))[0]
    first_piece = tokenizer.decode(free.token_ids[:1])
    stop = "\n" + first_piece  # '\n' from the prompt + the first generated token
    assert stop not in free.text
    again = generator.generate([_user(PROMPTS[1])], SamplingParams(max_new_tokens=6, stop=(stop,)))[0]
    assert again.token_ids == free.token_ids and again.finish_reason == "length"


def test_eos_ends_a_sequence_and_is_kept_in_its_ids(peaky_model, tokenizer):
    free = HFGenerator(peaky_model, tokenizer).generate([_user(PROMPTS[1])], SamplingParams(max_new_tokens=8))[0]
    eos = free.token_ids[3]
    k = free.token_ids.index(eos)
    peaky_model.generation_config.eos_token_id = [tokenizer.eos_token_id, eos]
    gen = HFGenerator(peaky_model, tokenizer).generate([_user(PROMPTS[1])], SamplingParams(max_new_tokens=8))[0]
    assert gen.finish_reason == "stop"
    assert gen.token_ids == free.token_ids[:k + 1]


def test_left_padded_batch_matches_batch_size_one(peaky_model, tokenizer):
    dialogues = [_user(p) for p in PROMPTS]
    params = SamplingParams(max_new_tokens=8)
    batched = HFGenerator(peaky_model, tokenizer, batch_size=3).generate(dialogues, params)
    single = HFGenerator(peaky_model, tokenizer, batch_size=1).generate(dialogues, params)
    assert len({len(g.prompt_token_ids) for g in batched}) == 3  # really padded
    for b, s in zip(batched, single, strict=True):
        assert b.token_ids == s.token_ids and b.text == s.text and b.prompt_token_ids == s.prompt_token_ids


def test_seeded_sampling_reproduces_and_leaves_global_rng_alone(peaky_model, tokenizer):
    generator = HFGenerator(peaky_model, tokenizer, batch_size=2)
    dialogues = [_user(p) for p in PROMPTS[:2]]
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=7)
    state = torch.get_rng_state()
    a = generator.generate(dialogues, params)
    assert torch.equal(torch.get_rng_state(), state)
    b = generator.generate(dialogues, params)
    c = generator.generate(dialogues, SamplingParams(max_new_tokens=8, temperature=1.0, seed=8))
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]


def test_generates_from_the_live_model_and_restores_training_mode(peaky_model, tokenizer):
    generator = HFGenerator(peaky_model, tokenizer)
    before = generator.generate([_user(PROMPTS[0])], SamplingParams(max_new_tokens=6))[0]
    peaky_model.train()
    with torch.no_grad():
        peaky_model.model.embed_tokens.weight.mul_(-1.0)  # an optimizer step, drastically
    after = generator.generate([_user(PROMPTS[0])], SamplingParams(max_new_tokens=6))[0]
    assert peaky_model.training
    assert after.token_ids != before.token_ids


def test_finished_sequences_leave_the_batch_and_waiting_prompts_take_their_slots(peaky_model, tokenizer,
                                                                                  monkeypatch):
    """Continuous batching: with 2 slots and 6 prompts ending at different steps, every completion equals its
    batch-of-one run, and waiting prompts joined sequences already running (their cache merged, left-padded)."""
    from score_code.generation.hf import _Decoder

    texts = [*PROMPTS, "Sort a list.", "x" * 60, "Write a very long and detailed poem about the sea, please, now."]
    dialogues = [_user(p) for p in texts]
    free = HFGenerator(peaky_model, tokenizer, batch_size=1).generate(dialogues, SamplingParams(max_new_tokens=10))

    # extra EOS ids that end four completions at different steps; the other two run to max_new_tokens
    ends = {0: 1, 2: 4, 3: 0, 5: 7}
    peaky_model.generation_config.eos_token_id = [tokenizer.eos_token_id,
                                                  *(free[i].token_ids[step] for i, step in ends.items())]
    widths = []
    merge = _Decoder._merge
    monkeypatch.setattr(_Decoder, "_merge", lambda self, parts: (
        self.cache is not None and widths.append((self.mask.shape[1], parts[0][1].shape[1])), merge(self, parts)))
    params = SamplingParams(max_new_tokens=10)
    single = HFGenerator(peaky_model, tokenizer, batch_size=1).generate(dialogues, params)
    assert not widths  # one slot: a prompt only ever starts in an empty batch
    batched = HFGenerator(peaky_model, tokenizer, batch_size=2).generate(dialogues, params)
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert [g.finish_reason for g in batched] == [g.finish_reason for g in single]
    assert {g.finish_reason for g in batched} == {"stop", "length"}
    assert any(old > new for old, new in widths)  # joined a running batch, left-padded to its width


def test_per_sequence_seeds_make_a_sample_independent_of_its_batch(peaky_model, tokenizer):
    """SamplingParams.seeds: a sequence's sample depends on its own seed only, not on the call or batch it is in
    (the harness's --round-size, a resumed run); a single `seed` shares one stream across the call."""
    params = SamplingParams(max_new_tokens=8, temperature=1.0)
    dialogues = [_user(p) for p in PROMPTS]
    together = HFGenerator(peaky_model, tokenizer, batch_size=3).generate(
        dialogues, replace(params, seeds=(11, 12, 13)))
    for i, seed in enumerate((11, 12, 13)):
        alone = HFGenerator(peaky_model, tokenizer, batch_size=1).generate(
            [_user(PROMPTS[i])], replace(params, seeds=(seed,)))[0]
        assert alone.token_ids == together[i].token_ids, i
    reordered = HFGenerator(peaky_model, tokenizer, batch_size=2).generate(
        dialogues[::-1], replace(params, seeds=(13, 12, 11)))
    assert [g.token_ids for g in reordered[::-1]] == [g.token_ids for g in together]
    other = HFGenerator(peaky_model, tokenizer, batch_size=3).generate(dialogues, replace(params, seeds=(21, 12, 13)))
    assert other[0].token_ids != together[0].token_ids
    assert [g.token_ids for g in other[1:]] == [g.token_ids for g in together[1:]]
    with pytest.raises(ValueError, match="2 seeds for 3 dialogues"):
        HFGenerator(peaky_model, tokenizer).generate(dialogues, replace(params, seeds=(1, 2)))


def test_stop_repeats_ends_a_looping_sequence_where_the_rules_say_and_leaves_the_others(tiny_model, tokenizer):
    """The tiny random model loops under greedy decoding: with the rules each completion is its free-running self cut
    at benchmarks.stopping.runaway_cut (the backend-independent definition), and ends as "stop"."""
    generator = HFGenerator(tiny_model, tokenizer, batch_size=3)
    dialogues = [_user(p) for p in PROMPTS]
    free = generator.generate(dialogues, SamplingParams(max_new_tokens=160))
    stopped = generator.generate(dialogues, SamplingParams(max_new_tokens=160, stop_repeats=True))
    cuts = [runaway_cut(g.token_ids, lambda ids: tokenizer.decode(ids, skip_special_tokens=True), digit_ids(tokenizer))
            for g in free]
    assert any(cut is not None for cut in cuts)
    for before, after, cut in zip(free, stopped, cuts, strict=True):
        if cut is None:
            assert after.token_ids == before.token_ids and after.finish_reason == before.finish_reason
        else:
            assert after.token_ids == before.token_ids[:cut] and after.finish_reason == "stop"
            assert after.text == tokenizer.decode(after.token_ids, skip_special_tokens=True)


def test_the_growing_cache_layer_holds_what_concatenation_would():
    """Decode steps write in place; row selection, a left cut and a merge (which replace the views) are followed by
    a move to new buffers, after which the states are still exactly the concatenated ones."""
    from score_code.generation.hf import _GrowingLayer

    gen = torch.Generator().manual_seed(0)

    def states(rows: int, width: int) -> torch.Tensor:
        return torch.randn(rows, 3, width, 8, generator=gen)

    keys, values = states(4, 5), states(4, 5)
    layer = _GrowingLayer(keys.clone(), values.clone())
    buffers = set()
    for step in range(150):
        k, v = states(4, 1), states(4, 1)
        got_k, got_v = layer.update(k, v)
        keys, values = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
        assert torch.equal(got_k, keys) and torch.equal(got_v, values)
        buffers.add(layer.key_buffer.data_ptr())
        if step == 40:  # the decoder's _retire: keep rows 0 and 2, cut two all-padding columns on the left
            rows = torch.tensor([0, 2])
            layer.batch_select_indices(rows)
            layer.keys, layer.values = layer.keys[:, :, 2:], layer.values[:, :, 2:]
            keys, values = keys[rows][:, :, 2:], values[rows][:, :, 2:]
            keys, values = torch.cat([keys, states(2, keys.shape[2])]), torch.cat([values, states(2, keys.shape[2])])
            layer.keys, layer.values = keys.clone(), values.clone()  # the decoder's _merge: two new rows
        if step == 90:  # a left cut alone keeps the buffer: the views just start further in
            layer.keys, layer.values = layer.keys[:, :, 3:], layer.values[:, :, 3:]
            keys, values = keys[:, :, 3:], values[:, :, 3:]
    assert len(buffers) < 10  # moved a few times (room doubles), not at every step


def test_a_prefix_shared_by_all_prompts_is_prefilled_once_and_changes_no_output(peaky_model, tokenizer, monkeypatch):
    """Prompts sharing a long prefix (MBPP's three shots): the prefix is one forward of its own and every later
    prefill starts after it, and each completion equals the prompt's own call (where nothing is shared)."""
    from score_code.generation import hf

    preamble = "Here are some examples of tasks and their solutions, read them carefully before you answer. " * 3
    dialogues = [_user(preamble + p) for p in [*PROMPTS, "Sort a list.", "x" * 40]]
    params = SamplingParams(max_new_tokens=10)
    alone = [HFGenerator(peaky_model, tokenizer).generate([d], params)[0] for d in dialogues]
    prompts = [g.prompt_token_ids for g in alone]
    shared = hf.shared_prefix_length(prompts)
    assert shared > 60 and all(p[:shared] == prompts[0][:shared] for p in prompts)

    widths = []
    forward = peaky_model.forward
    monkeypatch.setattr(peaky_model, "forward", lambda *a, **kw: (widths.append(kw["input_ids"].shape[1]),
                                                                  forward(*a, **kw))[1])
    for batch_size in (1, 2, 5):
        widths.clear()
        together = HFGenerator(peaky_model, tokenizer, batch_size=batch_size).generate(dialogues, params)
        assert [g.token_ids for g in together] == [g.token_ids for g in alone], batch_size
        assert [g.prompt_token_ids for g in together] == prompts
        prefills = [w for w in widths if w > 1]
        assert prefills[0] == shared and max(prefills[1:]) == max(len(p) for p in prompts) - shared


def test_a_group_is_prefilled_in_chunks_within_the_token_budget_and_changes_no_output(peaky_model, tokenizer,
                                                                                     monkeypatch):
    """prefill_tokens caps rows x padded width of each prefill forward (a longer prompt is a forward of its own);
    the chunks' caches merge into one batch whose completions equal each prompt's own call."""
    from score_code.generation import hf

    dialogues = [_user(p) for p in [*PROMPTS, "Sort a list.", "x" * 40, "Add."]]
    params = SamplingParams(max_new_tokens=10)
    alone = [HFGenerator(peaky_model, tokenizer).generate([d], params)[0] for d in dialogues]
    prompts = [g.prompt_token_ids for g in alone]
    shared = hf.shared_prefix_length(prompts)  # the chat template's system turn: one forward of its own first
    lengths = sorted((len(p) - shared for p in prompts), reverse=True)  # what each row prefills after it
    budget = 2 * lengths[2]  # the two longest prompts alone, the rest two or more at a time

    shapes = []
    forward = peaky_model.forward
    monkeypatch.setattr(peaky_model, "forward", lambda *a, **kw: (shapes.append(tuple(kw["input_ids"].shape)),
                                                                  forward(*a, **kw))[1])
    together = HFGenerator(peaky_model, tokenizer, batch_size=len(dialogues), prefill_tokens=budget).generate(
        dialogues, params)
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    prefills = [(rows, width) for rows, width in shapes if width > 1]
    assert shared and prefills.pop(0) == (1, shared)
    assert sum(rows for rows, _ in prefills) == len(dialogues) and len(prefills) >= 3
    assert all(rows * width <= budget or rows == 1 for rows, width in prefills)
    assert prefills[0] == (1, lengths[0])  # longest first, alone: it exceeds the budget with any other row
    with pytest.raises(ValueError, match="prefill_tokens must be >= 1"):
        HFGenerator(peaky_model, tokenizer, prefill_tokens=0)


def test_shared_prefix_length_leaves_every_prompt_a_token_and_ignores_short_overlaps():
    from score_code.generation.hf import MIN_SHARED_PREFIX, shared_prefix_length

    base = list(range(100, 100 + MIN_SHARED_PREFIX + 5))
    assert shared_prefix_length([base + [1, 2], base + [1, 3]]) == len(base) + 1
    assert shared_prefix_length([base, base + [7]]) == len(base) - 1  # the shorter one keeps its last token
    assert shared_prefix_length([base]) == 0  # a single prompt: nothing to share
    assert shared_prefix_length([base[:MIN_SHARED_PREFIX - 1] + [1], base[:MIN_SHARED_PREFIX - 1] + [2]]) == 0
