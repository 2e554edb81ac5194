"""The demo model's tokenizer and chat format: a byte-level BPE with Llama 3's special tokens and split regex.

The vocabulary is trained with Hugging Face `tokenizers` on the generated conversations, then the Llama 3
special tokens are appended by name. In the GGUF it is a "gpt2" (byte-level BPE) tokenizer with pre-tokenizer
"llama-bpe", so llama.cpp splits text with the same regex as here and both tokenize alike (checked after
export, see `train_demo_model.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import gguf
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from llamafoundry.service.chat_format import ChatFormatter
from llamafoundry.service.types import ChatMessage

BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
FINETUNE_RIGHT_PAD_ID = "<|finetune_right_pad_id|>"
START_HEADER_ID = "<|start_header_id|>"
END_HEADER_ID = "<|end_header_id|>"
EOM_ID = "<|eom_id|>"  # end of message, more to come (Llama 3.1 tool calls); end of generation too
EOT_ID = "<|eot_id|>"  # end of turn: every assistant message ends with it; end of generation
PYTHON_TAG = "<|python_tag|>"

# Appended after the BPE vocabulary, in Llama 3's relative order (Llama 3 has them at 128000 and up).
SPECIAL_TOKENS = (
    BEGIN_OF_TEXT,
    END_OF_TEXT,
    FINETUNE_RIGHT_PAD_ID,
    START_HEADER_ID,
    END_HEADER_ID,
    EOM_ID,
    EOT_ID,
    PYTHON_TAG,
)

# Llama 3's pre-tokenizer regex (tokenizer.json of Meta-Llama-3); llama.cpp applies it for pre "llama-bpe".
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)

# The classic Llama 3 chat format, written for this model: BOS, then one header + content + <|eot_id|> per
# message (tool results under the "ipython" role, as Llama 3.1 names them), then the assistant header when
# the model is to answer. Content is trimmed like Meta's templates do.
CHAT_TEMPLATE = r"""{{- bos_token }}
{%- for message in messages %}
    {%- set role = 'ipython' if message['role'] == 'tool' else message['role'] %}
    {%- if message['content'] is string %}
        {%- set content = message['content'] | trim %}
    {%- elif message['content'] is none %}
        {%- set content = '' %}
    {%- else %}
        {%- set content = message['content'] | tojson %}
    {%- endif %}
    {%- if message['tool_calls'] is defined and message['tool_calls'] %}
        {%- set call = message['tool_calls'][0]['function'] %}
        {%- set content = '{"name": "' + call['name'] + '", "parameters": ' + (call['arguments'] | tojson) + '}' %}
    {%- endif %}
    {{- '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_CONTROL = 3


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE of `vocab_size` tokens in all: the learned ones, then SPECIAL_TOKENS."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    if tokenizer.get_vocab_size() != vocab_size:
        raise ValueError(
            f"the corpus yields only {tokenizer.get_vocab_size()} tokens, not {vocab_size}: ask for a smaller "
            "vocabulary or generate more conversations"
        )
    return tokenizer


def tokenizer_texts(conversations: Iterable[list[dict[str, str]]]) -> Iterable[str]:
    """The text fragments the model sees between special tokens: role names and "\\n\\n" + content."""
    yield "ipython"
    for conversation in conversations:
        for message in conversation:
            yield message["role"]
            yield "\n\n" + message["content"].strip()


def render(formatter: ChatFormatter, conversation: list[dict[str, str]]) -> str:
    """The conversation as the server renders it (BOS text included, no generation prompt)."""
    messages = [ChatMessage(m["role"], m["content"]) for m in conversation]
    return formatter.render(messages, add_generation_prompt=False)


def chat_formatter() -> ChatFormatter:
    return ChatFormatter(CHAT_TEMPLATE, bos_token=BEGIN_OF_TEXT, eos_token=EOT_ID)


def assistant_mask(tokenizer: Tokenizer, ids: list[int]) -> list[bool]:
    """True for the tokens the assistant writes: its content and the <|eot_id|> that ends it.

    The assistant header and the "\\n\\n" after it are part of the prompt (the generation prompt ends there).
    """
    header = [
        tokenizer.token_to_id(START_HEADER_ID),
        *tokenizer.encode("assistant").ids,
        tokenizer.token_to_id(END_HEADER_ID),
        *tokenizer.encode("\n\n").ids,
    ]
    eot = tokenizer.token_to_id(EOT_ID)
    mask, inside, i = [False] * len(ids), False, 0
    while i < len(ids):
        if not inside and ids[i : i + len(header)] == header:
            inside, i = True, i + len(header)
            continue
        if inside:
            mask[i] = True
            inside = ids[i] != eot
        i += 1
    return mask


def add_gguf_metadata(writer: gguf.GGUFWriter, tokenizer: Tokenizer) -> None:
    """Write the `tokenizer.*` GGUF metadata llama.cpp needs for this vocabulary (gpt2 model, llama-bpe split)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError("token ids are not contiguous")
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    special = set(SPECIAL_TOKENS)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    # control tokens: parse_special turns their text into one id, and detokenizing hides them unless asked
    writer.add_token_types([TOKEN_TYPE_CONTROL if t in special else TOKEN_TYPE_NORMAL for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(vocab[BEGIN_OF_TEXT])
    # eos is <|eot_id|>, as in Llama 3.1 Instruct GGUFs: every answer of a chat model ends with it
    writer.add_eos_token_id(vocab[EOT_ID])
    writer.add_eot_token_id(vocab[EOT_ID])
    writer.add_eom_token_id(vocab[EOM_ID])
    writer.add_pad_token_id(vocab[FINETUNE_RIGHT_PAD_ID])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
