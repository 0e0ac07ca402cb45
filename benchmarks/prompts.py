"""Prompts: attempt-1 dialogues (HumanEval zero-shot, MBPP canonical 3-shot), the self-correction turn, stop strings.

Two renderings of one Dialogue: chat models get `messages` through their tokenizer's chat template (done by the
generation backend); base models get `render_plain(messages)`, a prefix-stable text rendering, so a backend can
encode only the new suffix of a dialogue and append it to the token ids it already has (token-in, token-out).
The first user message differs between the two: chat models are asked for a fenced code block, base models see
the raw continuation text (HumanEval: the function prompt; MBPP: the same 3-shot text either way).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from benchmarks.generation import Dialogue
from benchmarks.tasks import Task

# Bump when any prompt text, rendering or stop string changes: results made with another version are not comparable.
PROMPTS_VERSION = "2"  # 2: from attempt 2 on, the closing code fence no longer stops generation

# The paper's code instruction p1 (Kumar et al. 2024), verbatim: it does not say whether attempt 1 was right.
SELF_CORRECTION_INSTRUCTION = (
    "There might be an error in the code above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. Only output the final correct Python program!"
)

Feedback = Literal["tests"]
FEEDBACK_MODES = ("tests",)
MAX_FEEDBACK_CHARS = 1000  # a traceback can be long; the first failure's gist fits well within this

# Separator render_plain puts around a user turn that follows an assistant turn.
PLAIN_TURN_SEPARATOR = "\n\n"

# A chat model's first answer is over once its code block closes; the prose after it is wasted decoding time.
CLOSING_FENCE_STOP = "\n```\n"
MBPP_DONE = "[DONE]"
# A base model continuing a HumanEval prompt is done when it starts new top-level code (Codex paper's stops).
HUMANEVAL_BODY_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")
# A base model writing a whole program (attempt >= 2, generic tasks) is done at top-level test code.
PLAIN_PROGRAM_STOPS = ("\nif __name__", "\nprint(", "\nassert ")


def mbpp_section(text: str, tests: Sequence[str], code: str | None = None) -> str:
    """One MBPP prompt section in the format of Austin et al. (2021); without `code`, open for the model to fill."""
    head = (
        f"You are an expert Python programmer, and here is your task: {text} "
        f"Your code should pass these tests:\n\n" + "\n".join(tests) + "\n[BEGIN]\n"
    )
    return head if code is None else f"{head}{code}\n{MBPP_DONE}"


def mbpp_prompt(task: Task, shots: Sequence[Task]) -> str:
    """The canonical 3-shot prompt: the shots' sections, then the task's section ending in '[BEGIN]\\n'."""
    sections = [mbpp_section(s.prompt, s.test_list_for_prompt or s.tests, s.reference_solution) for s in shots]
    sections.append(mbpp_section(task.prompt, task.test_list_for_prompt or task.tests))
    return "\n".join(sections)


def first_user_message(task: Task, shots: Sequence[Task] = (), chat: bool = True) -> str:
    """The attempt-1 user turn for a task."""
    if task.test_format == "mbpp":
        return mbpp_prompt(task, shots)
    if not chat:
        return task.prompt  # HumanEval / generic for base models: the model continues the prompt text
    if task.test_format == "humaneval":
        return (
            "Complete the following Python function. Write the whole function, with the imports it needs, "
            f"in one ```python code block.\n\n```python\n{task.prompt.rstrip()}\n```"
        )
    return f"{task.prompt.rstrip()}\n\nWrite the solution as a Python program in one ```python code block."


def first_dialogue(task: Task, shots: Sequence[Task] = (), chat: bool = True) -> Dialogue:
    """Attempt 1: one user message."""
    return Dialogue(messages=[{"role": "user", "content": first_user_message(task, shots, chat)}])


def self_correction_message(feedback: Feedback | None = None, previous_failure: str | None = None,
                            previous_passed: bool = False) -> str:
    """The user turn before attempt t >= 2: p1 verbatim (intrinsic), or with feedback="tests" the outcome of the
    previous attempt first (extrinsic; `previous_failure` is the first failing test's message)."""
    if feedback is None:
        return SELF_CORRECTION_INSTRUCTION
    if feedback not in FEEDBACK_MODES:
        raise ValueError(f"unknown feedback mode {feedback!r}; expected None or one of {FEEDBACK_MODES}")
    if previous_passed:
        return f"The code above passed all the tests.\n\n{SELF_CORRECTION_INSTRUCTION}"
    if not previous_failure:
        return SELF_CORRECTION_INSTRUCTION  # nothing to show (e.g. the grader itself failed)
    message = previous_failure.strip()
    if len(message) > MAX_FEEDBACK_CHARS:
        message = message[:MAX_FEEDBACK_CHARS] + " ..."
    return f"The code above failed a test:\n{message}\n\n{SELF_CORRECTION_INSTRUCTION}"


def append_self_correction(dialogue: Dialogue, content: str) -> Dialogue:
    """Add the next user turn to the SAME dialogue (its token ids stay valid; the backend encodes only the new turn)."""
    if not dialogue.messages or dialogue.messages[-1]["role"] != "assistant":
        raise ValueError("the self-correction turn must follow an assistant turn (the previous attempt)")
    dialogue.messages.append({"role": "user", "content": content})
    return dialogue


def render_plain(messages: Sequence[dict[str, str]]) -> str:
    """Text for base models without a chat template.

    Prefix-stable: each message renders on its own (user turns after the first are wrapped in blank lines, the
    assistant's text is kept verbatim), so render_plain(messages[:k]) is a prefix of render_plain(messages), and
    a dialogue ending in a user turn ends exactly where the model should continue as the assistant.
    """
    parts = []
    for i, m in enumerate(messages):
        role, content = m["role"], m["content"]
        if role == "assistant":
            parts.append(content)
        elif role in ("user", "system"):
            parts.append(content if i == 0 else f"{PLAIN_TURN_SEPARATOR}{content}{PLAIN_TURN_SEPARATOR}")
        else:
            raise ValueError(f"message {i}: unknown role {role!r}")
    return "".join(parts)


def stop_sequences(task: Task, chat: bool, attempt: int) -> tuple[str, ...]:
    """Stop strings that end generation right after the code (half of a measured run was prose after the code).

    Attempt 1 stops at the first closing code fence. From attempt 2 on it does not: a correction may first quote
    the old code or restate the prompt in a block of its own, and the answer is its last block (benchmarks.extract
    grades the last complete one). That costs the prose a model writes after its last block (README, Evaluate).
    """
    fence = (CLOSING_FENCE_STOP,) if attempt == 1 else ()
    if task.test_format == "mbpp":
        return (MBPP_DONE, *fence) if chat else (MBPP_DONE,)
    if chat:
        return fence
    if task.test_format == "humaneval" and attempt == 1:
        return HUMANEVAL_BODY_STOPS
    return (*PLAIN_PROGRAM_STOPS, *fence)
