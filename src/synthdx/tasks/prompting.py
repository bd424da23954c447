"""Chat prompts shared by every task: one user turn (instruction, blank line, text) after a short
system prompt, rendered by the tokenizer's own chat template, with long texts cut and flagged."""

from __future__ import annotations


def end_token_id(tokenizer) -> int:
    """The token that closes an assistant turn (`<|im_end|>` for ChatML models, else EOS)."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if end is None or end == tokenizer.unk_token_id:
        end = tokenizer.eos_token_id
    return end


def truncate_text(tokenizer, text: str, max_tokens: int) -> tuple[str, bool]:
    """`text` cut to its first `max_tokens` tokens (marked " [...]"), and whether it was cut."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text, False
    return tokenizer.decode(ids[:max_tokens]) + " [...]", True


def chat_messages(system_prompt: str, instruction: str, text: str) -> list[dict]:
    return [{"role": "system", "content": system_prompt},
            {"role": "user", "content": f"{instruction}\n\n{text}"}]


def chat_prompt_ids(tokenizer, system_prompt: str, instruction: str, text: str) -> list[int]:
    """Token ids of the prompt up to the start of the assistant's answer."""
    ids = tokenizer.apply_chat_template(chat_messages(system_prompt, instruction, text),
                                        add_generation_prompt=True, tokenize=True, return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)
