"""Writes a tiny, random-weight Llama model directory for tests, benchmarks and the sandbox.

Nothing is downloaded: the tokenizer is trained here with the ``tokenizers`` library on a short
built-in text, the weights are drawn from a fixed seed, and both are saved the way Hugging Face
saves a model (``config.json``, ``model.safetensors``, ``tokenizer.json``, ...), so any code that
loads a Hub checkpoint from a local directory loads this one too.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BOS: Final = "<s>"
EOS: Final = "</s>"
PAD: Final = "<pad>"
UNK: Final = "<unk>"

CHAT_TEMPLATE: Final = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
"""A deliberately simple chat template, so tests exercise the tokenizer's own template path."""

_TRAINING_TEXT: Final = """
Kaito turns a Workspace into a served language model. A platform engineer applies a Workspace that
names a preset model and a GPU instance type; the operator finds or provisions GPU nodes, deploys an
inference server whose image already holds the model weights, exposes it as a Service and reports
progress in the Workspace status. The user then sends a prompt to the generate endpoint and reads
the tokens as they stream back. Deleting the Workspace removes everything it made.
The weather today is mild with a light breeze from the west. Clouds gather over the hills in the
afternoon and a little rain may fall in the evening. Tomorrow will be sunny and warm, and the wind
will turn to the south. Farmers are glad of the rain; children are glad of the sun.
A cat sat on the mat and watched the birds in the garden. The dog slept by the fire. The kettle
sang in the kitchen while the bread was baking, and the house smelled of cinnamon and apples.
Once upon a time there was a small robot who wanted to learn how to write stories. Every night it
read one book, and every morning it wrote one sentence. After a thousand days it had written a
thousand sentences, and the sentences, put together, made a very long and very strange story.
Questions and answers: What is a GPU? A processor that runs many small calculations at once.
What is a token? A piece of text, often part of a word, that a model reads and writes.
What is batching? Serving many requests together so the hardware does more useful work per step.
Numbers: one two three four five six seven eight nine ten, 0 1 2 3 4 5 6 7 8 9 10 100 1000.
"""


def build_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on the built-in text, wrapped for transformers.

    Metaspace pre-tokenisation (as Llama's sentencepiece tokenizer does) keeps every token valid
    text, so streamed token texts always concatenate to the generated text. The alphabet covers
    printable ASCII, so any ASCII prompt encodes without unknown tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK, BOS, EOS, PAD],
        initial_alphabet=[*string.printable.strip(), "\u2581"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TRAINING_TEXT.split("\n"), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
        model_input_names=["input_ids", "attention_mask"],
    )


def write_tiny_model(
    directory: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
) -> Path:
    """Write a tiny Llama model (safetensors) and its tokenizer to ``directory``; return the path.

    ``intermediate_size`` defaults to twice ``hidden_size``. Defaults give a ~100k-parameter
    model that loads in well under a second on one CPU core.
    The same seed always gives the same weights. Grouped-query attention (fewer KV heads than
    heads) is on by default so the KV-cache handling is exercised the way real models use it.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = LlamaConfig(  # type: ignore[no-untyped-call]
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
